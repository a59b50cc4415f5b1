// Package release prepares software for otaflow rollouts: each release is signed as a target
// of the fleet's TUF repository (package tuf) and uploaded, with the repository's metadata, to
// the local jobs service's artifact store, which stands in for S3.
package release

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/otaflow/otaflow/internal/delta"
	"github.com/otaflow/otaflow/internal/delta/cut"
	"github.com/otaflow/otaflow/internal/tuf"
	"github.com/otaflow/otaflow/workflows/contract"
)

// Release is a published release: what a rollout names.
type Release struct {
	Software string             `json:"software"`
	Version  string             `json:"version"`
	Artifact *contract.Artifact `json:"artifact"`
	// Length and SHA256 are what the signed target says (for the operator's record).
	Length int64  `json:"length"`
	SHA256 string `json:"sha256"`
}

// Publish signs file as the target of c.Software at c.Version in repo and, unless store is
// nil, uploads the package and then the repository's metadata to bucket.
//
// With a store, the release is also cut into chunks (package delta): chunks it shares with
// earlier releases are stored once, and its signed target names the chunk index, so devices
// running an earlier release fetch only what changed.
func Publish(ctx context.Context, repo *tuf.Repo, store *Store, bucket, file string, c tuf.Custom) (*Release, error) {
	if store != nil {
		d, err := store.PutChunks(ctx, bucket, file, c.Software, c.Version)
		if err != nil {
			return nil, err
		}
		c.Delta = d
	}
	tf, err := repo.AddTarget(tuf.TargetName(c.Software, c.Version), file, c)
	if err != nil {
		return nil, err
	}
	rel := &Release{Software: c.Software, Version: c.Version, Artifact: &contract.Artifact{URL: S3URL(bucket, c.Software, c.Version)},
		Length: tf.Length, SHA256: hex.EncodeToString(tf.Hashes["sha256"])}
	if store == nil {
		return rel, nil
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := store.Put(ctx, bucket, c.Software+"/"+c.Version+".tar.gz", f, rel.Length, rel.SHA256); err != nil {
		return nil, err
	}
	return rel, store.PutMetadata(ctx, repo, bucket)
}

// PublishComponent signs a component version's recipe (its JSON, as the catalog holds it) as
// the target components/NAME/VERSION.json, so devices record that version when a deployment
// names it, and uploads the metadata unless store is nil.
func PublishComponent(ctx context.Context, repo *tuf.Repo, store *Store, bucket, name, version string, recipe []byte) error {
	f, err := os.CreateTemp("", "recipe-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(recipe); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	c := tuf.Custom{Software: tuf.SoftwareComponents, Component: name, Version: version}
	if _, err := repo.AddTarget(c.Name(), f.Name(), c); err != nil {
		return err
	}
	if store == nil {
		return nil
	}
	return store.PutMetadata(ctx, repo, bucket)
}

// MetadataKey is where a TUF metadata file lives in the bucket; the jobs service serves
// bucket/tuf/* to anyone at /tuf/BUCKET/FILE (it is signed, not secret).
func MetadataKey(file string) string { return "tuf/" + file }

// MetadataURL is the base URL devices fetch the repository's metadata from (agent --tuf-url).
func MetadataURL(endpoint, bucket string) string {
	return strings.TrimSuffix(endpoint, "/") + "/tuf/" + bucket + "/"
}

// DefaultBucket is where releases are published unless an operator says otherwise.
const DefaultBucket = "otaflow-releases"

// S3URL is where an artifact of software at version lives in bucket.
func S3URL(bucket, software, version string) string {
	return "s3://" + bucket + "/" + software + "/" + version + ".tar.gz"
}

// Store is the local jobs service's artifact store.
type Store struct {
	Endpoint        string // e.g. http://127.0.0.1:4566
	Region          string
	AccessKeyID     string
	SecretAccessKey string
	HTTP            *http.Client
}

// PutChunks cuts the release in file into chunks, uploads the ones the store does not hold
// yet and then the chunk index, and returns what the signed target says of them.
func (s Store) PutChunks(ctx context.Context, bucket, file, software, version string) (*tuf.Delta, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	magic := make([]byte, 2)
	if _, err := io.ReadFull(f, magic); err != nil || magic[0] != 0x1f || magic[1] != 0x8b {
		return nil, nil // not a .tar.gz: devices download it whole
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	x, _, err := cut.Build(f, func(key string, stored []byte) error {
		return s.PutBytesOnce(ctx, bucket, key, stored)
	})
	if err != nil {
		return nil, fmt.Errorf("cut %s into chunks: %w", file, err)
	}
	raw, err := cut.Encode(x)
	if err != nil {
		return nil, err
	}
	key := delta.IndexKey(software, version)
	if err := s.PutBytes(ctx, bucket, key, raw); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(raw)
	return &tuf.Delta{Format: delta.Format, Index: key, IndexLength: int64(len(raw)), IndexSHA256: hex.EncodeToString(sum[:]),
		Length: x.Length, SHA256: x.SHA256}, nil
}

// PutMetadata uploads every metadata file of repo in the order the store verifies them: the
// numbered roots oldest first, root.json, targets, snapshot, and timestamp last (a device that
// sees the new timestamp finds everything it points at already there).
func (s Store) PutMetadata(ctx context.Context, repo *tuf.Repo, bucket string) error {
	files, err := repo.Files()
	if err != nil {
		return err
	}
	var roots []int
	for name := range files {
		if n, ok := strings.CutSuffix(name, ".root.json"); ok {
			if v, err := strconv.Atoi(n); err == nil {
				roots = append(roots, v)
			}
		}
	}
	slices.Sort(roots)
	var order []string
	for _, v := range roots {
		order = append(order, strconv.Itoa(v)+".root.json")
	}
	order = append(order, "root.json", "targets.json", "snapshot.json", "timestamp.json")
	for _, name := range order {
		raw, ok := files[name]
		if !ok {
			continue
		}
		if err := s.putMetadataFile(ctx, bucket, name, raw); err != nil {
			return err
		}
	}
	return nil
}

// putMetadataFile uploads one metadata file to the store's verifying endpoint.
func (s Store) putMetadataFile(ctx context.Context, bucket, name string, raw []byte) error {
	sum := sha256.Sum256(raw)
	return s.put(ctx, strings.TrimSuffix(s.Endpoint, "/")+"/tuf/"+bucket+"/"+name, bytes.NewReader(raw), int64(len(raw)), hex.EncodeToString(sum[:]), "")
}

// PutBytes uploads raw to bucket/key.
func (s Store) PutBytes(ctx context.Context, bucket, key string, raw []byte) error {
	sum := sha256.Sum256(raw)
	return s.Put(ctx, bucket, key, bytes.NewReader(raw), int64(len(raw)), hex.EncodeToString(sum[:]))
}

// PutBytesOnce uploads raw to bucket/key unless an object is there already (S3's conditional
// write, If-None-Match: *): for content-addressed keys, whose object cannot differ.
func (s Store) PutBytesOnce(ctx context.Context, bucket, key string, raw []byte) error {
	sum := sha256.Sum256(raw)
	err := s.put(ctx, s.objectURL(bucket, key), bytes.NewReader(raw), int64(len(raw)), hex.EncodeToString(sum[:]), "*")
	if errors.Is(err, errExists) {
		return nil
	}
	return err
}

// errExists is S3's PreconditionFailed for a conditional write over an object.
var errExists = errors.New("the object exists")

// Put uploads size bytes from body, whose SHA-256 is sha256Hex, to bucket/key with a SigV4
// signed PUT.
func (s Store) Put(ctx context.Context, bucket, key string, body io.Reader, size int64, sha256Hex string) error {
	return s.put(ctx, s.objectURL(bucket, key), body, size, sha256Hex, "")
}

func (s Store) put(ctx context.Context, u string, body io.Reader, size int64, sha256Hex, ifNoneMatch string) error {
	h := http.Header{}
	if ifNoneMatch != "" {
		h.Set("If-None-Match", ifNoneMatch)
	}
	resp, err := s.send(ctx, http.MethodPut, u, body, size, sha256Hex, h)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusPreconditionFailed && ifNoneMatch != "" {
		return errExists
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("upload %s: %s: %s", u, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// emptySHA256 is the SHA-256 of no body.
const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// send makes a SigV4 signed request to the store; the caller closes the answer's body.
func (s Store) send(ctx context.Context, method, u string, body io.Reader, size int64, sha256Hex string, h http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	req.ContentLength = size
	for k, v := range h {
		req.Header[k] = v
	}
	// Stated up front, the hash lets the store check the body as it streams (any size).
	req.Header.Set("X-Amz-Content-Sha256", sha256Hex)
	creds := aws.Credentials{AccessKeyID: s.AccessKeyID, SecretAccessKey: s.SecretAccessKey}
	if err := v4.NewSigner().SignHTTP(ctx, creds, req, sha256Hex, "iot", s.Region, time.Now()); err != nil {
		return nil, err
	}
	hc := s.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w (is the jobs service running? `starter dev` starts it)", method, s.Endpoint, err)
	}
	return resp, nil
}

// File is one entry of a package built with Pack.
type File struct {
	Name string
	Mode int64
	Body []byte
}

// Pack builds a .tar.gz from files (the demo's releases and tests).
func Pack(files ...File) ([]byte, error) {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Name: f.Name, Mode: f.Mode, Size: int64(len(f.Body)), Typeflag: tar.TypeReg}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.Body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
