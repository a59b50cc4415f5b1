package artifact_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/agent/artifact"
)

func signed(t *testing.T, data []byte) (artifact.Spec, ed25519.PublicKey) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	sum := sha256.Sum256(data)
	return artifact.Spec{Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:]), Signature: hex.EncodeToString(ed25519.Sign(priv, sum[:]))}, pub
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
	spec, pub := signed(t, data)
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
	require.NoError(t, artifact.Download(context.Background(), spec, path, artifact.Options{PublicKey: pub, Progress: progress}))
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, data, got)
	require.EqualValues(t, 2, calls.Load(), "the second request resumed with Range")
	require.Equal(t, int64(len(data)), last)
	require.Greater(t, reports, int64(1))
}

func TestDownloadRefusesWhatDoesNotVerify(t *testing.T) {
	data := []byte("the real artifact")
	spec, pub := signed(t, data)
	url, _ := serve(t, data, 0)
	spec.URL = url
	dir := t.TempDir()
	otherPub, _, _ := ed25519.GenerateKey(rand.Reader)

	for name, tc := range map[string]struct {
		mutate func(*artifact.Spec, *artifact.Options)
		want   string
	}{
		"wrong sha256": {func(s *artifact.Spec, _ *artifact.Options) {
			sum := sha256.Sum256([]byte("something else"))
			s.SHA256 = hex.EncodeToString(sum[:])
		}, "signature does not match"},
		"bad signature":    {func(s *artifact.Spec, _ *artifact.Options) { s.Signature = strings.Repeat("00", 64) }, "signature does not match"},
		"other fleet key":  {func(_ *artifact.Spec, o *artifact.Options) { o.PublicKey = otherPub }, "signature does not match"},
		"no key":           {func(_ *artifact.Spec, o *artifact.Options) { o.PublicKey = nil }, "no fleet public key"},
		"oversize":         {func(_ *artifact.Spec, o *artifact.Options) { o.MaxSize = 4 }, "outside"},
		"truncated source": {func(s *artifact.Spec, _ *artifact.Options) { s.Size = int64(len(data)) + 10 }, "got"},
	} {
		t.Run(name, func(t *testing.T) {
			s, o := spec, artifact.Options{PublicKey: pub, Attempts: 2}
			tc.mutate(&s, &o)
			err := artifact.Download(context.Background(), s, filepath.Join(dir, name), o)
			require.ErrorContains(t, err, tc.want)
		})
	}

	// A signed digest whose bytes do not arrive intact is refused, and the file removed.
	liar := []byte("the real artifacT")
	lurl, _ := serve(t, liar, 0)
	s := spec
	s.URL = lurl
	p := filepath.Join(dir, "tampered")
	err := artifact.Download(context.Background(), s, p, artifact.Options{PublicKey: pub})
	require.ErrorIs(t, err, artifact.ErrVerify)
	require.ErrorContains(t, err, "sha256 is")
	_, statErr := os.Stat(p)
	require.True(t, os.IsNotExist(statErr))
}
