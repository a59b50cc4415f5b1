package rolloutops

import (
	"cmp"
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
	rels, err := PublishedReleases(ctx, base, in.Software)
	if errors.Is(err, ErrNothingPublished) {
		return nil, invalidErr(fmt.Sprintf("no release was ever published to bucket %s (%s): publish one with `starter release publish --bucket %s`", in.Bucket, base, in.Bucket), nil)
	}
	if err != nil {
		return nil, err
	}
	rel, why := NewestFor(rels, in.OS, in.Architecture)
	if rel == nil {
		return nil, invalidErr(fmt.Sprintf("bucket %s has no published release of %s %s: publish one with `starter release publish --software %s --bucket %s`", in.Bucket, in.Software, why, in.Software, in.Bucket), nil)
	}
	return &contract.LatestReleaseResult{Version: rel.Version, ArtifactURL: release.S3URL(in.Bucket, in.Software, rel.Version)}, nil
}

// NewestFor is the newest of releases (oldest first) built for os/arch, or nil and why none.
func NewestFor(rels []PublishedRelease, os, arch string) (*PublishedRelease, string) {
	if len(rels) == 0 {
		return nil, "(none at all)"
	}
	for i := len(rels) - 1; i >= 0; i-- {
		if ok, _ := rels[i].For(os, arch); ok {
			return &rels[i], ""
		}
	}
	newest := rels[len(rels)-1]
	_, why := newest.For(os, arch)
	return nil, fmt.Sprintf("for %s/%s devices (the newest, %s: %s)", os, arch, newest.Version, why)
}

// PickRelease is the release of software a rollout to os/arch devices installs, from rels
// (PublishedReleases of bucket; none when nothing was ever published there): version, which
// must be published and built for them, or with no version the newest that is. Every refusal
// says what to publish or pick: devices refuse a job with nothing to download.
func PickRelease(rels []PublishedRelease, bucket, software, version, os, arch string) (*PublishedRelease, error) {
	if version == "" {
		rel, why := NewestFor(rels, os, arch)
		if rel == nil {
			return nil, fmt.Errorf("bucket %s has no published release of %s %s: publish one (`starter release publish --software %s --os %s --architecture %s --bucket %s`)",
				bucket, software, why, software, os, arch, bucket)
		}
		return rel, nil
	}
	i := slices.IndexFunc(rels, func(r PublishedRelease) bool { return r.Version == version })
	if i < 0 {
		var published []string
		for _, r := range rels {
			published = append(published, r.Version)
		}
		return nil, fmt.Errorf("%s %s was never published to bucket %s (published: %s; `starter release list`), and devices refuse an update with nothing to download: publish it with `starter release publish --software %s --version %s --bucket %s`, or pick a published one",
			software, version, bucket, cmp.Or(strings.Join(published, ", "), "none"), software, version, bucket)
	}
	if ok, why := rels[i].For(os, arch); !ok {
		return nil, fmt.Errorf("%s %s cannot go to these devices: %s, and every device would refuse it; publish a build for %s/%s, or target the devices it is for",
			software, version, why, os, arch)
	}
	return &rels[i], nil
}

// ErrNothingPublished is a bucket no release was ever published to (no TUF metadata).
var ErrNothingPublished = errors.New("no release was ever published there")

// PublishedVersions lists the versions of software signed in the release repository whose
// metadata is served at base (the TUF targets "SOFTWARE/VERSION.tar.gz"), oldest first. Only
// the version is read here: every device still verifies the release it is sent against its own
// trusted root, so a forged targets.json cannot get anything installed.
func PublishedVersions(ctx context.Context, base, software string) ([]string, error) {
	rels, err := PublishedReleases(ctx, base, software)
	out := make([]string, len(rels))
	for i, r := range rels {
		out[i] = r.Version
	}
	return out, err
}

// PublishedRelease is a release as its signed target names it.
type PublishedRelease struct {
	Version string
	// OS and Architecture are the platform it is built for ("" for any).
	OS, Architecture string
}

// For reports whether the release may be installed on devices of os and arch; if not, why.
func (r PublishedRelease) For(os, arch string) (bool, string) {
	if (r.OS == "" || os == "" || r.OS == os) && (r.Architecture == "" || arch == "" || r.Architecture == arch) {
		return true, ""
	}
	return false, fmt.Sprintf("it is built for %s/%s, and the targets are %s/%s devices", r.OS, r.Architecture, os, arch)
}

// PublishedReleases is PublishedVersions with each release's platform.
func PublishedReleases(ctx context.Context, base, software string) ([]PublishedRelease, error) {
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
	rels, err := ReadPublished(io.LimitReader(resp.Body, 32<<20), software)
	if err != nil {
		return nil, fmt.Errorf("read %s/targets.json: %w", base, err)
	}
	return rels, nil
}

// ReadPublished is PublishedReleases of a targets.json read from r.
func ReadPublished(r io.Reader, software string) ([]PublishedRelease, error) {
	var meta struct {
		Signed struct {
			Targets map[string]struct {
				Custom struct {
					OS           string `json:"os"`
					Architecture string `json:"architecture"`
				} `json:"custom"`
			} `json:"targets"`
		} `json:"signed"`
	}
	if err := json.NewDecoder(r).Decode(&meta); err != nil {
		return nil, err
	}
	type found struct {
		v *semver.Version
		r PublishedRelease
	}
	var all []found
	for name, t := range meta.Signed.Targets {
		v, ok := strings.CutPrefix(name, software+"/")
		if !ok {
			continue
		}
		v, ok = strings.CutSuffix(v, ".tar.gz")
		if !ok {
			continue
		}
		if sv, err := semver.StrictNewVersion(v); err == nil {
			all = append(all, found{sv, PublishedRelease{Version: sv.Original(), OS: t.Custom.OS, Architecture: t.Custom.Architecture}})
		}
	}
	slices.SortFunc(all, func(a, b found) int { return a.v.Compare(b.v) })
	out := make([]PublishedRelease, len(all))
	for i, f := range all {
		out[i] = f.r
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
