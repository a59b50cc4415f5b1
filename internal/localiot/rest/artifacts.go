package rest

import (
	"crypto/hmac"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"errors"
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

// handleArtifactDownload serves an artifact to whoever holds a valid, unexpired presigned URL,
// or signs the request with the REST key (S3's GetObject; authed wraps serveArtifact in the
// SigV4 check). Range requests are honoured, so downloads resume.
func (s api) handleArtifactDownload(authed http.Handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			authed.ServeHTTP(w, r)
			return
		}
		s.presignedDownload(w, r)
	}
}

func (s api) presignedDownload(w http.ResponseWriter, r *http.Request) {
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
	s.serveArtifact(w, r)
}

// serveArtifact answers GetObject for a request already authorized.
func (s api) serveArtifact(w http.ResponseWriter, r *http.Request) {
	bucket, key := r.PathValue("bucket"), r.PathValue("key")
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

// handleDeleteObject is S3's DeleteObject: 204, whether or not the key was there.
func (s api) handleDeleteObject(w http.ResponseWriter, r *http.Request) {
	if err := s.DeleteArtifact(r.PathValue("bucket"), r.PathValue("key")); err != nil {
		writeS3Error(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// listBucketResult is S3's ListObjectsV2 answer.
type listBucketResult struct {
	XMLName               xml.Name     `xml:"http://s3.amazonaws.com/doc/2006-03-01/ ListBucketResult"`
	Name                  string       `xml:"Name"`
	Prefix                string       `xml:"Prefix"`
	KeyCount              int          `xml:"KeyCount"`
	MaxKeys               int          `xml:"MaxKeys"`
	IsTruncated           bool         `xml:"IsTruncated"`
	ContinuationToken     string       `xml:"ContinuationToken,omitempty"`
	NextContinuationToken string       `xml:"NextContinuationToken,omitempty"`
	StartAfter            string       `xml:"StartAfter,omitempty"`
	Contents              []listObject `xml:"Contents"`
}

type listObject struct {
	Key          string `xml:"Key"`
	LastModified string `xml:"LastModified"`
	ETag         string `xml:"ETag"`
	Size         int64  `xml:"Size"`
	StorageClass string `xml:"StorageClass"`
}

// handleListObjects is S3's ListObjectsV2 (list-type=2) over a bucket's artifacts.
func (s api) handleListObjects(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("list-type") != "2" {
		writeS3Error(w, localiot.Errorf(localiot.CodeInvalidRequest, "only ListObjectsV2 (list-type=2) is served"))
		return
	}
	limit := 1000
	if v := q.Get("max-keys"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			writeS3Error(w, localiot.Errorf(localiot.CodeInvalidRequest, "max-keys %q is not a number from 0 to 1000", v))
			return
		}
		limit = min(n, 1000)
	}
	after := q.Get("start-after")
	if t := q.Get("continuation-token"); t != "" {
		raw, err := base64.RawURLEncoding.DecodeString(t)
		if err != nil {
			writeS3Error(w, localiot.Errorf(localiot.CodeInvalidRequest, "the continuation token is not one this store gave"))
			return
		}
		after = string(raw)
	}
	objs, truncated, err := s.ListArtifacts(r.PathValue("bucket"), q.Get("prefix"), after, limit)
	if err != nil {
		writeS3Error(w, err)
		return
	}
	res := listBucketResult{Name: r.PathValue("bucket"), Prefix: q.Get("prefix"), KeyCount: len(objs), MaxKeys: limit, IsTruncated: truncated,
		ContinuationToken: q.Get("continuation-token"), StartAfter: q.Get("start-after")}
	for _, o := range objs {
		res.Contents = append(res.Contents, listObject{Key: o.Key, LastModified: o.LastModified.Format("2006-01-02T15:04:05.000Z"), ETag: o.ETag, Size: o.Size, StorageClass: "STANDARD"})
	}
	if truncated && len(objs) > 0 {
		res.NextContinuationToken = base64.RawURLEncoding.EncodeToString([]byte(objs[len(objs)-1].Key))
	}
	w.Header().Set("Content-Type", "application/xml")
	w.Write([]byte(xml.Header))
	xml.NewEncoder(w).Encode(res)
}

// writeS3Error answers as S3 does: an XML Error with S3's code, which S3 clients show.
func writeS3Error(w http.ResponseWriter, err error) {
	code, status := "InternalError", http.StatusInternalServerError
	var e *localiot.Error
	if errors.As(err, &e) {
		switch e.Code {
		case localiot.CodeUnauthorized:
			code, status = "AccessDenied", http.StatusForbidden
		case localiot.CodeInvalidRequest:
			code, status = "InvalidArgument", http.StatusBadRequest
		}
	}
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	w.Write([]byte(xml.Header))
	xml.NewEncoder(w).Encode(struct {
		XMLName xml.Name `xml:"Error"`
		Code    string   `xml:"Code"`
		Message string   `xml:"Message"`
	}{Code: code, Message: err.Error()})
}
