package localiot

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	chunks "github.com/otaflow/otaflow/internal/delta"
	"github.com/otaflow/otaflow/internal/localiot/store"
	"github.com/otaflow/otaflow/internal/s3url"
	"github.com/otaflow/otaflow/internal/tuf"
)

// The local artifact store stands in for S3: artifacts are uploaded with a signed PUT to
// /artifacts/{bucket}/{key}, and job documents name them with AWS's placeholder
// ${aws:iot:s3-presigned-url:https://s3.amazonaws.com/{bucket}/{key}}, which a device sees
// replaced by an expiring signed URL, as AWS IoT does with presignedUrlConfig.

var (
	presignSecret  = "presign-secret"
	placeholderRE  = regexp.MustCompile(`\$\{aws:iot:s3-presigned-url:([^}]+)\}`)
	artifactPrefix = "/artifacts/"
)

const (
	QueryExpires   = "X-Otaflow-Expires"
	QuerySignature = "X-Otaflow-Signature"
	// QueryPrefix marks a grant for every key under a prefix (a key ending in "/").
	QueryPrefix = "X-Otaflow-Prefix"
)

// loadPresignSecret returns the key that signs artifact URLs, created on first use and kept
// in the database so URLs stay valid across restarts.
func (s *Service) loadPresignSecret() ([]byte, error) {
	var key []byte
	err := s.st.Update(func(t store.Tx) error {
		var err error
		key, err = t.Secret(presignSecret, 32)
		return err
	})
	return key, err
}

func (s *Service) artifactDir() string { return s.artifacts }

// ArtifactPath maps bucket/key to a file under the store, refusing anything that would
// escape it.
func (s *Service) ArtifactPath(bucket, key string) (string, error) {
	if !thingNameRE.MatchString(bucket) || key == "" || strings.Contains(key, "..") || strings.HasPrefix(key, "/") || strings.Contains(key, "\\") {
		return "", Errorf(CodeInvalidRequest, "artifact %s/%s is not a valid bucket/key", bucket, key)
	}
	return filepath.Join(s.artifactDir(), bucket, filepath.FromSlash(path.Clean(key))), nil
}

// PutArtifact stores an artifact atomically.
func (s *Service) PutArtifact(bucket, key string, r io.Reader) (int64, error) {
	p, err := s.ArtifactPath(bucket, key)
	if err != nil {
		return 0, err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return 0, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".upload-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(tmp.Name())
	n, err := io.Copy(tmp, r)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("store artifact %s/%s: %w", bucket, key, err)
	}
	return n, os.Rename(tmp.Name(), p)
}

func (s *Service) Sign(bucket, key string, expires int64) string {
	m := hmac.New(sha256.New, s.presignKey)
	fmt.Fprintf(m, "%s/%s\n%d", bucket, key, expires)
	return hex.EncodeToString(m.Sum(nil))
}

// PresignURL returns a URL to bucket/key on this service that expires after ttl. The key
// delta.Prefix ("delta/") is the bucket's chunk store: the URL grants every key under it,
// appended to its path (what a CloudFront signed URL with a wildcard policy grants on AWS);
// no other prefix can be granted.
func (s *Service) PresignURL(bucket, key string, ttl time.Duration) string {
	expires := s.Clock().Add(ttl).Unix()
	q := url.Values{QueryExpires: {strconv.FormatInt(expires, 10)}, QuerySignature: {s.Sign(bucket, key, expires)}}
	if key == chunks.Prefix {
		q.Set(QueryPrefix, key)
	}
	return strings.TrimSuffix(s.baseURL, "/") + artifactPrefix + bucket + "/" + key + "?" + q.Encode()
}

// DocumentFor returns the job's document as a device gets it: placeholders replaced by
// presigned URLs when the job has a presignedUrlConfig.
func (s *Service) DocumentFor(j *store.Job) string {
	if j.Presign == nil || !strings.Contains(j.Document, "${aws:iot:s3-presigned-url:") {
		return j.Document
	}
	ttl := time.Duration(j.Presign.ExpiresInSec) * time.Second
	return placeholderRE.ReplaceAllStringFunc(j.Document, func(m string) string {
		bucket, key, ok := s3url.Parse(placeholderRE.FindStringSubmatch(m)[1])
		if !ok {
			return m
		}
		return s.PresignURL(bucket, key, ttl)
	})
}

// DocumentFromSource reads a job document from the artifact store, as AWS reads a
// documentSource from S3: https://s3.amazonaws.com/BUCKET/KEY, https://BUCKET.s3.amazonaws.com/KEY
// (any region's S3 host) or s3://BUCKET/KEY.
func (s *Service) DocumentFromSource(src string) (string, error) {
	if len(src) > 1350 {
		return "", Errorf(CodeInvalidRequest, "documentSource is longer than 1350 characters")
	}
	bucket, key, ok := s3url.Parse(src)
	if !ok {
		return "", Errorf(CodeInvalidRequest, "documentSource %q is not an S3 URL (https://s3.amazonaws.com/BUCKET/KEY or s3://BUCKET/KEY)", src)
	}
	p, err := s.ArtifactPath(bucket, key)
	if err != nil {
		return "", err
	}
	f, err := os.Open(p)
	if err != nil {
		return "", Errorf(CodeInvalidRequest, "documentSource %s: no such object in the artifact store (upload it first)", src)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, MaxDocumentBytes+1))
	if err != nil {
		return "", err
	}
	if len(raw) > MaxDocumentBytes {
		return "", Errorf(CodeInvalidRequest, "the job document at %s is larger than %d bytes", src, MaxDocumentBytes)
	}
	return string(raw), nil
}

// PutTUFMetadata stores one file of a bucket's release repository metadata, but only what
// `starter release` produces: tuf.CheckUpload verifies it against the metadata already
// published, so the REST key alone can neither re-sign nor replace it. One upload at a time
// (check, then write).
func (s *Service) PutTUFMetadata(bucket, file string, raw []byte) (int64, error) {
	s.tufMu.Lock()
	defer s.tufMu.Unlock()
	stored := func(name string) []byte {
		p, err := s.ArtifactPath(bucket, "tuf/"+name)
		if err != nil {
			return nil
		}
		b, _ := os.ReadFile(p)
		return b
	}
	if _, err := s.ArtifactPath(bucket, "tuf/"+file); err != nil {
		return 0, err
	}
	if err := tuf.CheckUpload(file, raw, stored); err != nil {
		s.log.Warn().Str("bucket", bucket).Str("file", file).Err(err).Msg("release metadata upload refused")
		return 0, Errorf(CodeInvalidRequest, "%v", err)
	}
	return s.PutArtifact(bucket, "tuf/"+file, bytes.NewReader(raw))
}

// Object is one stored artifact as S3's ListObjectsV2 describes it.
type Object struct {
	Key          string
	Size         int64
	LastModified time.Time
	ETag         string // S3's: the hex MD5 of the content, quoted
}

// etagCache keeps each listed object's MD5 by path, size and modification time: computed
// once per object, not once per listing.
var etagCache sync.Map // string → string

func etagOf(p string, st os.FileInfo) string {
	id := fmt.Sprintf("%s\x00%d\x00%d", p, st.Size(), st.ModTime().UnixNano())
	if v, ok := etagCache.Load(id); ok {
		return v.(string)
	}
	f, err := os.Open(p)
	if err != nil {
		return `""`
	}
	defer f.Close()
	h := md5.New()
	if _, err := io.Copy(h, f); err != nil {
		return `""`
	}
	e := `"` + hex.EncodeToString(h.Sum(nil)) + `"`
	etagCache.Store(id, e)
	return e
}

// ListArtifacts lists bucket's objects whose keys begin with prefix, in key order, after the
// key after (S3's StartAfter or continuation token), at most limit of them; truncated says
// whether more follow.
func (s *Service) ListArtifacts(bucket, prefix, after string, limit int) ([]Object, bool, error) {
	if !thingNameRE.MatchString(bucket) {
		return nil, false, Errorf(CodeInvalidRequest, "bucket %q is not a valid bucket name", bucket)
	}
	root := filepath.Join(s.artifactDir(), bucket)
	// Walk only the deepest directory the prefix names.
	dir := root
	if i := strings.LastIndex(prefix, "/"); i > 0 && !strings.Contains(prefix, "..") {
		dir = filepath.Join(root, filepath.FromSlash(prefix[:i]))
	}
	var keys []string
	infos := map[string]os.FileInfo{}
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if info.IsDir() || strings.HasPrefix(info.Name(), ".") {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if key == "tuf" || strings.HasPrefix(key, "tuf/") || !strings.HasPrefix(key, prefix) || key <= after {
			return nil
		}
		keys = append(keys, key)
		infos[key] = info
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	sort.Strings(keys)
	truncated := len(keys) > limit
	if truncated {
		keys = keys[:limit]
	}
	out := make([]Object, 0, len(keys))
	for _, k := range keys {
		st := infos[k]
		out = append(out, Object{Key: k, Size: st.Size(), LastModified: st.ModTime().UTC(), ETag: etagOf(filepath.Join(root, filepath.FromSlash(k)), st)})
	}
	return out, truncated, nil
}

// DeleteArtifact removes bucket/key; a key that is not there is no error (S3's DeleteObject).
// The release metadata under tuf/ is not an artifact and cannot be deleted.
func (s *Service) DeleteArtifact(bucket, key string) error {
	if k := path.Clean(key); k == "tuf" || strings.HasPrefix(k, "tuf/") {
		return Errorf(CodeUnauthorized, "%s/%s is release metadata: it is never deleted", bucket, key)
	}
	p, err := s.ArtifactPath(bucket, key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}
