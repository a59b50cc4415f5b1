package release

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/otaflow/otaflow/internal/delta"
	"github.com/otaflow/otaflow/internal/tuf"
)

// bucketURL is bucket's URL in the store (path-style S3), and objectURL bucket/key's.
func (s Store) bucketURL(bucket string) string {
	return strings.TrimSuffix(s.Endpoint, "/") + "/artifacts/" + bucket
}

func (s Store) objectURL(bucket, key string) string {
	return s.bucketURL(bucket) + "/" + (&url.URL{Path: key}).EscapedPath()
}

// Get reads bucket/key (S3's GetObject), refusing objects larger than limit bytes.
func (s Store) Get(ctx context.Context, bucket, key string, limit int64) ([]byte, error) {
	resp, err := s.send(ctx, http.MethodGet, s.objectURL(bucket, key), nil, 0, emptySHA256, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("get %s/%s: %s: %s", bucket, key, resp.Status, strings.TrimSpace(string(body)))
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(raw)) > limit {
		return nil, fmt.Errorf("get %s/%s: larger than %d bytes", bucket, key, limit)
	}
	return raw, nil
}

// Delete removes bucket/key (S3's DeleteObject; a key that is not there is no error).
func (s Store) Delete(ctx context.Context, bucket, key string) error {
	resp, err := s.send(ctx, http.MethodDelete, s.objectURL(bucket, key), nil, 0, emptySHA256, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("delete %s/%s: %s: %s", bucket, key, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// StoredObject is one listed object.
type StoredObject struct {
	Key          string    `xml:"Key"`
	Size         int64     `xml:"Size"`
	LastModified time.Time `xml:"LastModified"`
}

// List calls fn with every object of bucket under prefix, in key order (S3's ListObjectsV2,
// page by page).
func (s Store) List(ctx context.Context, bucket, prefix string, fn func(StoredObject) error) error {
	token := ""
	for {
		q := url.Values{"list-type": {"2"}, "prefix": {prefix}}
		if token != "" {
			q.Set("continuation-token", token)
		}
		resp, err := s.send(ctx, http.MethodGet, s.bucketURL(bucket)+"?"+q.Encode(), nil, 0, emptySHA256, nil)
		if err != nil {
			return err
		}
		var page struct {
			IsTruncated           bool           `xml:"IsTruncated"`
			NextContinuationToken string         `xml:"NextContinuationToken"`
			Contents              []StoredObject `xml:"Contents"`
		}
		if resp.StatusCode != http.StatusOK {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			return fmt.Errorf("list %s/%s: %s: %s", bucket, prefix, resp.Status, strings.TrimSpace(string(body)))
		}
		err = xml.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("list %s/%s: %w", bucket, prefix, err)
		}
		for _, o := range page.Contents {
			if err := fn(o); err != nil {
				return err
			}
		}
		if !page.IsTruncated || page.NextContinuationToken == "" {
			return nil
		}
		token = page.NextContinuationToken
	}
}

// GCResult is what a collection found and did.
type GCResult struct {
	LiveReleases  int   `json:"liveReleases"`  // signed releases with a chunk index
	LiveChunks    int   `json:"liveChunks"`    // distinct chunks they need
	Deleted       int   `json:"deleted"`       // chunks and indexes removed
	FreedBytes    int64 `json:"freedBytes"`    // their bytes
	KeptYoung     int   `json:"keptYoung"`     // unreferenced, but newer than the grace period
	StoredObjects int   `json:"storedObjects"` // chunks and indexes listed
}

// CollectChunks removes from bucket's chunk store every chunk and index that no release
// signed in repo needs. Each live release's index is read from the store and checked against
// its signed digest; one that cannot be read stops the collection (a chunk it needs cannot be
// told from garbage). Objects younger than grace are kept: a publish in progress uploads its
// chunks before it signs its release.
func (s Store) CollectChunks(ctx context.Context, repo *tuf.Repo, bucket string, grace time.Duration) (GCResult, error) {
	var res GCResult
	signed, err := repo.Signed()
	if err != nil {
		return res, err
	}
	live := map[string]bool{}
	for _, t := range signed {
		d := t.Delta
		if d == nil {
			continue
		}
		res.LiveReleases++
		live[d.Index] = true
		raw, err := s.Get(ctx, bucket, d.Index, delta.MaxIndex)
		if err != nil {
			return res, fmt.Errorf("read the chunk index of %s %s: %w; nothing was deleted", t.Software, t.Version, err)
		}
		if sum := sha256.Sum256(raw); hex.EncodeToString(sum[:]) != d.IndexSHA256 {
			return res, fmt.Errorf("the stored chunk index of %s %s is not the signed one; nothing was deleted", t.Software, t.Version)
		}
		x, err := delta.Decode(raw)
		if err != nil {
			return res, fmt.Errorf("the chunk index of %s %s: %w; nothing was deleted", t.Software, t.Version, err)
		}
		for _, seg := range x.Segments {
			for _, c := range seg.Chunks {
				k := delta.ChunkKey(c.SHA256)
				if !live[k] {
					live[k] = true
					res.LiveChunks++
				}
			}
		}
	}
	cutoff := time.Now().Add(-grace)
	var garbage []StoredObject
	if err := s.List(ctx, bucket, delta.Prefix, func(o StoredObject) error {
		res.StoredObjects++
		switch {
		case live[o.Key]:
		case o.LastModified.After(cutoff):
			res.KeptYoung++
		default:
			garbage = append(garbage, o)
		}
		return nil
	}); err != nil {
		return res, err
	}
	for _, o := range garbage {
		if err := s.Delete(ctx, bucket, o.Key); err != nil {
			return res, err
		}
		res.Deleted++
		res.FreedBytes += o.Size
	}
	return res, nil
}

// Remove withdraws software at version: its signed target is removed (devices refuse to
// install it from then on; those that run it keep it and may still roll back to it from its
// slot), the new metadata is uploaded, and its package and chunk index are deleted from the
// store. Its chunks go with the next CollectChunks.
func Remove(ctx context.Context, repo *tuf.Repo, store *Store, bucket, software, version string) error {
	name := tuf.TargetName(software, version)
	var d *tuf.Delta
	signed, err := repo.Signed()
	if err != nil {
		return err
	}
	for _, t := range signed {
		if t.Name == name {
			d = t.Delta
		}
	}
	if err := repo.RemoveTarget(name); err != nil {
		return err
	}
	if store == nil {
		return nil
	}
	if err := store.PutMetadata(ctx, repo, bucket); err != nil {
		return err
	}
	if err := store.Delete(ctx, bucket, software+"/"+version+".tar.gz"); err != nil {
		return err
	}
	if d != nil {
		return store.Delete(ctx, bucket, d.Index)
	}
	return nil
}
