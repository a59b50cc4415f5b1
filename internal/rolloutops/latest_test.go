package rolloutops_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/release"
	"github.com/otaflow/otaflow/internal/rolloutops"
	"github.com/otaflow/otaflow/internal/tuf"
	"github.com/otaflow/otaflow/workflows/contract"
)

// TestLatestReleaseReadsTheSignedTargets publishes releases into a real TUF repository,
// serves its metadata over HTTP as the jobs service does, and asks for the newest: the
// highest version of that software (not the last published, not another software's).
func TestLatestReleaseReadsTheSignedTargets(t *testing.T) {
	dir := t.TempDir()
	repo, err := tuf.Init(filepath.Join(dir, "repo"), tuf.Options{})
	require.NoError(t, err)
	pkg := filepath.Join(dir, "pkg.tar.gz")
	require.NoError(t, os.WriteFile(pkg, []byte("package"), 0o644))
	for _, r := range []struct{ sw, v string }{{"core", "1.2.0"}, {"core", "1.10.0"}, {"core", "1.9.3"}, {"ota_agent", "9.0.0"}} {
		_, err := repo.AddTarget(tuf.TargetName(r.sw, r.v), pkg, tuf.Custom{Software: r.sw, Version: r.v, OS: "ubuntu", Architecture: "x86_64"})
		require.NoError(t, err)
	}
	files, err := repo.Files()
	require.NoError(t, err)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, ok := files[filepath.Base(r.URL.Path)]
		if r.URL.Path[:len("/tuf/fleet/")] != "/tuf/fleet/" || !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(raw)
	}))
	defer srv.Close()
	a := &rolloutops.Ops{ReleaseMetadataURL: rolloutops.MetadataURLs("", srv.URL)}
	got, err := a.LatestRelease(context.Background(), contract.LatestReleaseInput{Software: "core", Bucket: "fleet"})
	require.NoError(t, err)
	require.Equal(t, "1.10.0", got.Version, "semantic order, not publish order or string order")
	require.Equal(t, release.S3URL("fleet", "core", "1.10.0"), got.ArtifactURL)

	_, err = a.LatestRelease(context.Background(), contract.LatestReleaseInput{Software: "core", Bucket: "empty"})
	require.ErrorContains(t, err, "no release was ever published to bucket empty")
	_, err = (&rolloutops.Ops{}).LatestRelease(context.Background(), contract.LatestReleaseInput{Software: "core", Bucket: "fleet"})
	require.ErrorContains(t, err, "--release-metadata-url")
}
