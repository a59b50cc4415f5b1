package delta_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/delta"
	"github.com/otaflow/otaflow/internal/delta/cut"
	"github.com/otaflow/otaflow/internal/release"
)

// chunkStore is an in-memory chunk store served over real HTTP, counting what it sends.
type chunkStore struct {
	mu       sync.Mutex
	objects  map[string][]byte
	sent     atomic.Int64
	requests atomic.Int64
	// serve, when set, decides each request (tests break or tamper with it).
	serve func(w http.ResponseWriter, key string, body []byte) bool
}

func newStore(t *testing.T) (*chunkStore, string) {
	s := &chunkStore{objects: map[string][]byte{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := delta.Prefix + strings.TrimPrefix(r.URL.Path, "/store/")
		require.Equal(t, "yes", r.URL.Query().Get("grant"), "the store URL's query is kept")
		s.mu.Lock()
		body, ok := s.objects[key]
		s.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		s.requests.Add(1)
		if s.serve != nil && !s.serve(w, key, body) {
			return
		}
		s.sent.Add(int64(len(body)))
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return s, srv.URL + "/store/?grant=yes"
}

func (s *chunkStore) put(key string, b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.objects[key] = append([]byte(nil), b...)
	return nil
}

// tree is a software tree: name → content.
type tree map[string][]byte

func randomBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func (t tree) pack(tb testing.TB) []byte {
	var names []string
	for n := range t {
		names = append(names, n)
	}
	slices.Sort(names)
	var files []release.File
	for _, n := range names {
		files = append(files, release.File{Name: n, Mode: 0o644, Body: t[n]})
	}
	raw, err := release.Pack(files...)
	require.NoError(tb, err)
	return raw
}

func untar(tb testing.TB, tgz []byte) []byte {
	gz, err := gzip.NewReader(bytes.NewReader(tgz))
	require.NoError(tb, err)
	raw, err := io.ReadAll(gz)
	require.NoError(tb, err)
	return raw
}

// install writes a tree where a device's slot would hold it.
func install(tb testing.TB, t tree) string {
	dir := tb.TempDir()
	for n, b := range t {
		require.NoError(tb, os.MkdirAll(filepath.Join(dir, filepath.Dir(n)), 0o755))
		require.NoError(tb, os.WriteFile(filepath.Join(dir, n), b, 0o644))
	}
	return dir
}

// releases are two versions of a 4 MiB tree: the second changes one file in the middle,
// adds one and drops one.
func releases(t *testing.T) (v1, v2 tree) {
	r := rand.New(rand.NewPCG(1, 2))
	v1, v2 = tree{}, tree{}
	for i := range 16 {
		name := "lib/part" + string(rune('a'+i)) + ".so"
		v1[name] = randomBytes(r, 256<<10)
		v2[name] = v1[name]
	}
	v1["bin/app"] = randomBytes(r, 300<<10)
	changed := append([]byte(nil), v1["bin/app"]...)
	copy(changed[150<<10:], randomBytes(r, 8<<10))
	v2["bin/app"] = changed
	v2["share/new.txt"] = randomBytes(r, 20<<10)
	delete(v2, "lib/partp.so")
	return v1, v2
}

func build(t *testing.T, s *chunkStore, tgz []byte) *delta.Index {
	x, _, err := cut.Build(bytes.NewReader(tgz), s.put)
	require.NoError(t, err)
	enc, err := cut.Encode(x)
	require.NoError(t, err)
	back, err := delta.Decode(enc)
	require.NoError(t, err)
	return back
}

// published is the two releases in a store, the second's index, and a device running the
// first.
func published(t *testing.T) (*chunkStore, string, *delta.Index, *delta.Base) {
	s, url := newStore(t)
	v1, v2 := releases(t)
	x1, x2 := build(t, s, v1.pack(t)), build(t, s, v2.pack(t))
	base, err := delta.OpenBase(install(t, v1), x1)
	require.NoError(t, err)
	return s, url, x2, base
}

func TestDeltaRebuildsTheReleaseFromWhatChanged(t *testing.T) {
	s, url := newStore(t)
	v1, v2 := releases(t)
	x1, x2 := build(t, s, v1.pack(t)), build(t, s, v2.pack(t))
	want := untar(t, v2.pack(t))
	require.Equal(t, int64(len(want)), x2.Length)

	base, err := delta.OpenBase(install(t, v1), x1)
	require.NoError(t, err)
	out := filepath.Join(t.TempDir(), "v2.tar")
	res, err := delta.Apply(context.Background(), x2, base, filepath.Join(t.TempDir(), "cache"), delta.Source{Store: url}, out)
	require.NoError(t, err)
	got, err := os.ReadFile(out)
	require.NoError(t, err)
	require.Equal(t, want, got, "the rebuilt tar is byte for byte the release's")
	// 28 KiB changed (8 in bin/app, 20 new): what is fetched is those chunks, bounded by
	// the chunk size around each change, not the 4 MiB release.
	t.Logf("fetched %d bytes in %d chunks, %d from the base, of %d", res.Fetched, res.ChunksFetched, res.FromBase, x2.Length)
	require.Less(t, res.Fetched, int64(2*delta.MaxChunk+(20<<10)))
	require.Equal(t, s.sent.Load(), res.Fetched)
	require.Greater(t, res.FromBase, x2.Length*9/10, "nine tenths of the release come from the installed version")
}

func TestTamperedChunkIsFetchedAgainThenRefused(t *testing.T) {
	s, url, x2, base := published(t)
	var tampered atomic.Int64
	s.serve = func(w http.ResponseWriter, key string, body []byte) bool {
		bad := append([]byte(nil), body...)
		bad[len(bad)/2] ^= 0xff
		tampered.Add(1)
		w.Write(bad)
		return false
	}
	out := filepath.Join(t.TempDir(), "v2.tar")
	_, err := delta.Apply(context.Background(), x2, base, filepath.Join(t.TempDir(), "cache"), delta.Source{Store: url}, out)
	require.ErrorIs(t, err, delta.ErrVerify)
	require.Equal(t, int64(2), tampered.Load(), "a chunk that fails its digest is fetched once more, then refused")

	// A transient fault is survived: the second fetch is intact.
	s.serve = func(w http.ResponseWriter, key string, body []byte) bool {
		if tampered.Add(1) == 3 {
			w.Write(body[:len(body)/2])
			return false
		}
		return true
	}
	_, err = delta.Apply(context.Background(), x2, base, filepath.Join(t.TempDir(), "cache"), delta.Source{Store: url}, out)
	require.NoError(t, err)
}

func TestInterruptedDeltaResumes(t *testing.T) {
	s, url, x2, base := published(t)
	cache, out := filepath.Join(t.TempDir(), "cache"), filepath.Join(t.TempDir(), "v2.tar")

	// The link dies after the first chunk.
	s.serve = func(w http.ResponseWriter, key string, body []byte) bool {
		if s.requests.Load() > 1 {
			http.Error(w, "link down", http.StatusServiceUnavailable)
			return false
		}
		return true
	}
	first, err := delta.Apply(context.Background(), x2, base, cache, delta.Source{Store: url, Attempts: 1}, out)
	require.Error(t, err)
	require.Equal(t, 1, first.ChunksFetched)

	s.serve = nil
	second, err := delta.Apply(context.Background(), x2, base, cache, delta.Source{Store: url}, out)
	require.NoError(t, err)
	require.Positive(t, second.FromCache, "what the first attempt fetched is taken from the cache")

	clean, err := delta.Apply(context.Background(), x2, base, filepath.Join(t.TempDir(), "cache2"), delta.Source{Store: url}, out)
	require.NoError(t, err)
	require.Equal(t, clean.Fetched, first.Fetched+second.Fetched, "the two attempts together fetched what one does")
	require.Equal(t, clean.ChunksFetched, first.ChunksFetched+second.ChunksFetched)
}

func TestModifiedBaseIsRefused(t *testing.T) {
	s, _ := newStore(t)
	v1, _ := releases(t)
	x1 := build(t, s, v1.pack(t))
	dir := install(t, v1)
	b := v1["lib/partc.so"]
	b[1000] ^= 1
	require.NoError(t, os.WriteFile(filepath.Join(dir, "lib/partc.so"), b, 0o644))
	_, err := delta.OpenBase(dir, x1)
	var be *delta.BaseError
	require.True(t, errors.As(err, &be), "got %v", err)
	require.Contains(t, be.Reason, "lib/partc.so differs")

	require.NoError(t, os.Remove(filepath.Join(dir, "lib/partc.so")))
	_, err = delta.OpenBase(dir, x1)
	require.True(t, errors.As(err, &be))
	require.Contains(t, be.Reason, "missing")
}

func TestIndexIsChecked(t *testing.T) {
	s, _ := newStore(t)
	v1, _ := releases(t)
	x := build(t, s, v1.pack(t))
	x.Format = "other-v9"
	raw, err := cut.Encode(x)
	require.NoError(t, err)
	_, err = delta.Decode(raw)
	require.ErrorIs(t, err, delta.ErrFormat)

	x.Format = delta.Format
	x.Length++
	raw, err = cut.Encode(x)
	require.NoError(t, err)
	_, err = delta.Decode(raw)
	require.ErrorIs(t, err, delta.ErrFormat)

	_, err = delta.Decode([]byte("not zstd"))
	require.Error(t, err)
}
