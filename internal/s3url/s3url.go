// Package s3url reads the S3 URLs job documents and rollouts name artifacts with.
package s3url

import (
	"net/url"
	"strings"
)

// Parse takes an S3 URL (s3://b/k, path-style https://s3.amazonaws.com/b/k or
// https://s3.REGION.amazonaws.com/b/k, virtual-hosted https://b.s3.REGION.amazonaws.com/k) and
// returns its bucket and key.
func Parse(raw string) (bucket, key string, ok bool) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", false
	}
	p := strings.TrimPrefix(u.Path, "/")
	switch {
	case u.Scheme == "s3":
		return u.Host, p, u.Host != "" && p != ""
	case strings.HasPrefix(u.Host, "s3.") || strings.HasPrefix(u.Host, "s3-"):
		bucket, key, ok = strings.Cut(p, "/")
		return bucket, key, ok && key != ""
	case strings.Contains(u.Host, ".s3."):
		return u.Host[:strings.Index(u.Host, ".s3.")], p, p != ""
	}
	return "", "", false
}
