package rolloutops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"

	"github.com/otaflow/otaflow/internal/release"
	"github.com/otaflow/otaflow/workflows/contract"
)

// LatestRelease finds the newest release of a software published to a bucket: the highest
// version among the TUF targets "SOFTWARE/VERSION.tar.gz" in the bucket's targets metadata.
// The worker only picks the version here; every device still verifies the release it is sent
// against its own trusted root, so a forged targets.json cannot get anything installed.
func (a *Ops) LatestRelease(ctx context.Context, in contract.LatestReleaseInput) (*contract.LatestReleaseResult, error) {
	if a.ReleaseMetadataURL == nil {
		return nil, invalidErr("this worker cannot read published releases: start it with --release-metadata-url (the jobs service's does by default)", nil)
	}
	base := a.ReleaseMetadataURL(in.Bucket)
	versions, err := PublishedVersions(ctx, base, in.Software)
	if errors.Is(err, ErrNothingPublished) {
		return nil, invalidErr(fmt.Sprintf("no release was ever published to bucket %s (%s): publish one with `starter release publish --bucket %s`", in.Bucket, base, in.Bucket), nil)
	}
	if err != nil {
		return nil, err
	}
	if len(versions) == 0 {
		return nil, invalidErr(fmt.Sprintf("bucket %s has no published release of %s: publish one with `starter release publish --software %s --bucket %s`", in.Bucket, in.Software, in.Software, in.Bucket), nil)
	}
	v := versions[len(versions)-1]
	return &contract.LatestReleaseResult{Version: v, ArtifactURL: release.S3URL(in.Bucket, in.Software, v)}, nil
}

// ErrNothingPublished is a bucket no release was ever published to (no TUF metadata).
var ErrNothingPublished = errors.New("no release was ever published there")

// PublishedVersions lists the versions of software signed in the release repository whose
// metadata is served at base (the TUF targets "SOFTWARE/VERSION.tar.gz"), oldest first. Only
// the version is read here: every device still verifies the release it is sent against its own
// trusted root, so a forged targets.json cannot get anything installed.
func PublishedVersions(ctx context.Context, base, software string) ([]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+"/targets.json", nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("read the releases published to %s: %w", base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, ErrNothingPublished
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("read the releases published to %s: %s", base, resp.Status)
	}
	var meta struct {
		Signed struct {
			Targets map[string]json.RawMessage `json:"targets"`
		} `json:"signed"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 32<<20)).Decode(&meta); err != nil {
		return nil, fmt.Errorf("read %s/targets.json: %w", base, err)
	}
	var found []*semver.Version
	for name := range meta.Signed.Targets {
		v, ok := strings.CutPrefix(name, software+"/")
		if !ok {
			continue
		}
		v, ok = strings.CutSuffix(v, ".tar.gz")
		if !ok {
			continue
		}
		if sv, err := semver.StrictNewVersion(v); err == nil {
			found = append(found, sv)
		}
	}
	slices.SortFunc(found, func(a, b *semver.Version) int { return a.Compare(b) })
	out := make([]string, len(found))
	for i, v := range found {
		out[i] = v.Original()
	}
	return out, nil
}

// MetadataURLs turns a --release-metadata-url template ("{bucket}" replaced) into
// Ops.ReleaseMetadataURL; an empty template means the local jobs service at
// jobsEndpoint (none when that is AWS, whose buckets have no such service).
func MetadataURLs(template, jobsEndpoint string) func(bucket string) string {
	switch {
	case template != "":
		return func(bucket string) string { return strings.ReplaceAll(template, "{bucket}", bucket) }
	case jobsEndpoint != "":
		return func(bucket string) string { return release.MetadataURL(jobsEndpoint, bucket) }
	}
	return nil
}
