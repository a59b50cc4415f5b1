package artifact_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/agent/artifact"
)

// specOf is what signed TUF metadata says of data.
func specOf(data []byte) artifact.Spec {
	sum := sha256.Sum256(data)
	return artifact.Spec{Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}
}

func serve(t *testing.T, data []byte, cutFirstAfter int) (string, *atomic.Int32) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 && cutFirstAfter > 0 {
			// A link that breaks mid-transfer.
			w.Header().Set("Content-Length", fmtInt(len(data)))
			w.WriteHeader(http.StatusOK)
			w.Write(data[:cutFirstAfter])
			hj, _ := w.(http.Hijacker)
			conn, _, _ := hj.Hijack()
			conn.Close()
			return
		}
		http.ServeContent(w, r, "a.bin", time.Time{}, bytes.NewReader(data))
	}))
	t.Cleanup(srv.Close)
	return srv.URL, &calls
}

func fmtInt(n int) string { return strconv.Itoa(n) }

func TestDownloadResumesAndVerifies(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 64*1024) // 1 MiB
	spec := specOf(data)
	url, calls := serve(t, data, 300_000)
	spec.URL = url
	path := filepath.Join(t.TempDir(), "a.bin")
	var last, reports int64
	progress := func(done, total int64) {
		require.Equal(t, int64(len(data)), total)
		require.GreaterOrEqual(t, done, last, "progress never goes back across a resume")
		last = done
		reports++
	}
	require.NoError(t, artifact.Download(context.Background(), spec, path, artifact.Options{Progress: progress}))
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, data, got)
	require.EqualValues(t, 2, calls.Load(), "the second request resumed with Range")
	require.Equal(t, int64(len(data)), last)
	require.Greater(t, reports, int64(1))
}

// A file an earlier attempt left torn (a power cut before the page cache reached the disk: the
// download is not fsynced) is found by its digest and fetched again from nothing, not
// installed and not failed.
func TestATornDownloadIsFetchedAgain(t *testing.T) {
	data := bytes.Repeat([]byte("otaflow!"), 32*1024)
	spec := specOf(data)
	url, calls := serve(t, data, 0)
	spec.URL = url
	path := filepath.Join(t.TempDir(), "a.bin")
	torn := bytes.Clone(data)
	copy(torn[1000:], make([]byte, 4096)) // a page of zeros where data should be
	require.NoError(t, os.WriteFile(path, torn, 0o600))
	require.NoError(t, artifact.Download(context.Background(), spec, path, artifact.Options{}))
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, data, got)
	require.EqualValues(t, 1, calls.Load(), "fetched once, whole")
}

func TestDownloadRefusesWhatDoesNotVerify(t *testing.T) {
	data := []byte("the real artifact")
	spec := specOf(data)
	url, _ := serve(t, data, 0)
	spec.URL = url
	dir := t.TempDir()

	for name, tc := range map[string]struct {
		mutate func(*artifact.Spec, *artifact.Options)
		want   string
	}{
		"wrong sha256": {func(s *artifact.Spec, _ *artifact.Options) {
			sum := sha256.Sum256([]byte("something else"))
			s.SHA256 = hex.EncodeToString(sum[:])
		}, "sha256 is"},
		"not a digest":     {func(s *artifact.Spec, _ *artifact.Options) { s.SHA256 = "abc" }, "not a hex SHA-256"},
		"oversize":         {func(_ *artifact.Spec, o *artifact.Options) { o.MaxSize = 4 }, "outside"},
		"truncated source": {func(s *artifact.Spec, _ *artifact.Options) { s.Size = int64(len(data)) + 10 }, "got"},
	} {
		t.Run(name, func(t *testing.T) {
			s, o := spec, artifact.Options{Attempts: 2}
			tc.mutate(&s, &o)
			err := artifact.Download(context.Background(), s, filepath.Join(dir, name), o)
			require.ErrorContains(t, err, tc.want)
		})
	}

	// A digest whose bytes do not arrive intact is refused, and the file removed.
	liar := []byte("the real artifacT")
	lurl, _ := serve(t, liar, 0)
	s := spec
	s.URL = lurl
	p := filepath.Join(dir, "tampered")
	err := artifact.Download(context.Background(), s, p, artifact.Options{})
	require.ErrorIs(t, err, artifact.ErrVerify)
	require.ErrorContains(t, err, "sha256 is")
	_, statErr := os.Stat(p)
	require.True(t, os.IsNotExist(statErr))
}

// A capped download keeps to its rate: 128 KiB at 256 KiB/s cannot arrive in less than half a
// second, and one pacer shared by several downloads caps them together.
func TestDownloadRateCap(t *testing.T) {
	data := bytes.Repeat([]byte("x"), 128<<10)
	url, _ := serve(t, data, 0)
	spec := specOf(data)
	spec.URL = url
	began := time.Now()
	require.NoError(t, artifact.Download(context.Background(), spec, filepath.Join(t.TempDir(), "a"), artifact.Options{BytesPerSecond: 256 << 10}))
	require.GreaterOrEqual(t, time.Since(began), 450*time.Millisecond, "the cap was not kept")

	p := artifact.NewPacer(256 << 10)
	began = time.Now()
	for range 2 {
		n, err := io.Copy(io.Discard, p.Reader(bytes.NewReader(data)))
		require.NoError(t, err)
		require.Equal(t, int64(len(data)), n)
	}
	require.GreaterOrEqual(t, time.Since(began), 950*time.Millisecond, "two readers of one pacer share its rate")
}
