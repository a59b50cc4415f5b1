package release_test

import (
	"context"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/delta"
	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/localiot/rest"
	"github.com/otaflow/otaflow/internal/release"
	"github.com/otaflow/otaflow/internal/tuf"
)

// artifactService is a jobs service keeping its artifacts under dir, served over HTTP with the
// REST key k/s.
func artifactService(t *testing.T, dir string) (*localiot.Service, string) {
	svc, err := localiot.Open(localiot.Options{Path: filepath.Join(dir, "jobs.db"), ArtifactDir: filepath.Join(dir, "artifacts"), Logger: zerolog.Nop()})
	require.NoError(t, err)
	t.Cleanup(func() { svc.Close() })
	srv := httptest.NewServer(rest.Handler(svc, &rest.SigV4Verifier{Creds: rest.Credentials{AccessKeyID: "k", SecretAccessKey: "s"}, Region: "us-east-1"}))
	t.Cleanup(srv.Close)
	svc.SetBaseURL(srv.URL)
	return svc, srv.URL
}

// TestRemoveAndCollectChunks publishes three releases that share most of their chunks, removes
// the middle one and collects the chunk store: what only the removed release used is deleted,
// and every chunk the live releases need is kept (each rebuilds from the store alone).
func TestRemoveAndCollectChunks(t *testing.T) {
	dir := t.TempDir()
	repo, err := tuf.Init(filepath.Join(dir, "repo"), tuf.Options{})
	require.NoError(t, err)
	svc, srvURL := artifactService(t, dir)
	ctx := context.Background()
	store := &release.Store{Endpoint: srvURL, Region: "us-east-1", AccessKeyID: "k", SecretAccessKey: "s"}

	r := rand.New(rand.NewPCG(3, 4))
	lib := make([]byte, 1<<20)
	for i := range lib {
		lib[i] = byte(r.Uint32())
	}
	var indexes []*tuf.Delta
	for i, v := range []string{"3.0.0", "3.1.0", "3.2.0"} {
		for j := 0; i > 0 && j < 64<<10; j++ { // each later release rewrites the same 64 KiB
			lib[(300<<10)+j] = byte(r.Uint32())
		}
		data, err := release.Pack(release.File{Name: "lib/lib.so", Mode: 0o644, Body: lib}, release.File{Name: "VERSION", Mode: 0o644, Body: []byte(v)})
		require.NoError(t, err)
		file := filepath.Join(dir, v+".tar.gz")
		require.NoError(t, os.WriteFile(file, data, 0o644))
		_, err = release.Publish(ctx, repo, store, "releases", file, tuf.Custom{Software: "core", Version: v, OS: "ubuntu", Architecture: "x86_64"})
		require.NoError(t, err)
		signed, err := repo.Signed()
		require.NoError(t, err)
		indexes = append(indexes, signed[len(signed)-1].Delta)
	}
	chunks := func() int {
		n := 0
		require.NoError(t, store.List(ctx, "releases", delta.Prefix+"chunks/", func(release.StoredObject) error { n++; return nil }))
		return n
	}
	before := chunks()

	// Nothing is garbage while every release is signed, and young objects are kept anyway.
	res, err := store.CollectChunks(ctx, repo, "releases", 0)
	require.NoError(t, err)
	require.Zero(t, res.Deleted)
	require.Equal(t, 3, res.LiveReleases)

	require.NoError(t, release.Remove(ctx, repo, store, "releases", "core", "3.1.0"))
	_, err = os.Stat(filepath.Join(dir, "artifacts", "releases", "core", "3.1.0.tar.gz"))
	require.ErrorIs(t, err, os.ErrNotExist, "the package is deleted")
	require.ErrorContains(t, release.Remove(ctx, repo, store, "releases", "core", "3.1.0"), "not a signed target")

	res, err = store.CollectChunks(ctx, repo, "releases", time.Hour)
	require.NoError(t, err)
	require.Zero(t, res.Deleted, "within the grace period nothing goes")
	require.Positive(t, res.KeptYoung)

	res, err = store.CollectChunks(ctx, repo, "releases", 0)
	require.NoError(t, err)
	require.Positive(t, res.Deleted)
	require.Equal(t, 2, res.LiveReleases)
	after := chunks()
	require.Less(t, after, before)
	require.Equal(t, res.LiveChunks, after, "exactly the live releases' chunks remain")
	require.Greater(t, res.FreedBytes, int64(64<<10), "what only 3.1.0 held is freed")
	t.Logf("chunks %d → %d, freed %d bytes", before, after, res.FreedBytes)

	// Every live release rebuilds from the store alone (no base).
	src := delta.Source{Store: svc.PresignURL("releases", delta.Prefix, time.Minute)}
	for _, i := range []int{0, 2} {
		raw, err := store.Get(ctx, "releases", indexes[i].Index, delta.MaxIndex)
		require.NoError(t, err)
		x, err := delta.Decode(raw)
		require.NoError(t, err)
		_, err = delta.Apply(ctx, x, nil, filepath.Join(dir, "cache", indexes[i].Index), src, filepath.Join(dir, "rebuilt.tar"))
		require.NoError(t, err, "release %d rebuilds", i)
	}
	// The removed release's index is gone with it.
	_, err = store.Get(ctx, "releases", indexes[1].Index, delta.MaxIndex)
	require.ErrorContains(t, err, "404")
}
