package rest

import (
	"crypto/hmac"
	"crypto/md5"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/otaflow/otaflow/internal/delta"
	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/tuf"
)

// handleArtifactUpload stores an artifact (behind SigV4). The release metadata under tuf/ is
// not an artifact: only handleTUFUpload writes it, after verifying it.
func (s api) handleArtifactUpload(r *http.Request) (any, error) {
	if key := path.Clean(r.PathValue("key")); key == "tuf" || strings.HasPrefix(key, "tuf/") {
		return nil, localiot.Errorf(localiot.CodeUnauthorized, "%s/%s is release metadata: it is written only by `starter release` (PUT /tuf/BUCKET/FILE), which the store verifies against the published root", r.PathValue("bucket"), key)
	}
	// S3's answer to PutObject: no body, the object's MD5 as its ETag (what `aws s3api
	// put-object` and S3 SDKs read).
	if r.Header.Get("If-None-Match") == "*" {
		// S3's conditional write: a content-addressed chunk already stored is not sent twice.
		if p, err := s.ArtifactPath(r.PathValue("bucket"), r.PathValue("key")); err == nil {
			if _, err := os.Stat(p); err == nil {
				return nil, localiot.Errorf(localiot.CodePreconditionFailed, "At least one of the pre-conditions you specified did not hold: %s/%s exists", r.PathValue("bucket"), r.PathValue("key"))
			}
		}
	}
	sum := md5.New()
	if _, err := s.PutArtifact(r.PathValue("bucket"), r.PathValue("key"), io.TeeReader(r.Body, sum)); err != nil {
		return nil, err
	}
	return headersOnly{"ETag": `"` + hex.EncodeToString(sum.Sum(nil)) + `"`}, nil
}

// handleArtifactDownload serves an artifact to whoever holds a valid, unexpired presigned URL.
// Range requests are honoured, so downloads resume.
func (s api) handleArtifactDownload(w http.ResponseWriter, r *http.Request) {
	bucket, key := r.PathValue("bucket"), r.PathValue("key")
	q := r.URL.Query()
	expires, err := strconv.ParseInt(q.Get(localiot.QueryExpires), 10, 64)
	// A grant is for one key, or for every key of the bucket's chunk store, which the
	// signature covers.
	granted := key
	if p := q.Get(localiot.QueryPrefix); p == delta.Prefix && strings.HasPrefix(key, p) {
		granted = p
	}
	if err != nil || !hmac.Equal([]byte(q.Get(localiot.QuerySignature)), []byte(s.Sign(bucket, granted, expires))) {
		http.Error(w, "AccessDenied: the URL's signature is missing or does not match; ask for a new job document", http.StatusForbidden)
		return
	}
	if s.Clock().Unix() > expires {
		http.Error(w, "AccessDenied: the URL expired; ask for the job document again to get a fresh one", http.StatusForbidden)
		return
	}
	p, err := s.ArtifactPath(bucket, key)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f, err := os.Open(p)
	if err != nil {
		http.Error(w, "NoSuchKey: "+bucket+"/"+key, http.StatusNotFound)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	http.ServeContent(w, r, path.Base(key), st.ModTime(), f)
}

// handleTUFUpload stores one file of the release repository's metadata (behind SigV4), but
// only what `starter release` produces: tuf.CheckUpload verifies it against the metadata
// already published, so the REST key alone can neither re-sign nor replace it.
func (s api) handleTUFUpload(r *http.Request) (any, error) {
	bucket, file := r.PathValue("bucket"), r.PathValue("file")
	raw, err := io.ReadAll(io.LimitReader(r.Body, tuf.MaxMetadataBytes+1))
	if err != nil {
		return nil, localiot.Errorf(localiot.CodeInvalidRequest, "read %s: %v", file, err)
	}
	n, err := s.PutTUFMetadata(bucket, file, raw)
	if err != nil {
		return nil, err
	}
	return &putObjectResponse{Bucket: bucket, Key: "tuf/" + file, Size: n}, nil
}

// handleTUFMetadata serves the release repository's metadata that `starter release publish`
// uploaded to bucket/tuf/, to anyone: devices check its signatures themselves.
func (s api) handleTUFMetadata(w http.ResponseWriter, r *http.Request) {
	bucket, file := r.PathValue("bucket"), r.PathValue("file")
	if !tuf.IsMetadataFile(file) {
		http.Error(w, "NoSuchKey: only TUF metadata (N.root.json, timestamp.json, snapshot.json, targets.json) is served here", http.StatusNotFound)
		return
	}
	p, err := s.ArtifactPath(bucket, "tuf/"+file)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f, err := os.Open(p)
	if err != nil {
		http.Error(w, "NoSuchKey: "+bucket+"/tuf/"+file+" (publish a release with `starter release publish`)", http.StatusNotFound)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	io.Copy(w, f)
}

// putObjectResponse is what an artifact or metadata upload stored.
type putObjectResponse struct {
	Bucket string `json:"bucket"`
	Key    string `json:"key"`
	Size   int64  `json:"size"`
}
