package rest

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// readFromRecorder is a ResponseWriter that, like net/http's own, takes a body through
// ReadFrom (which net/http serves with sendfile); it counts the bytes that came that way.
type readFromRecorder struct {
	*httptest.ResponseRecorder
	viaReadFrom int64
}

func (w *readFromRecorder) ReadFrom(src io.Reader) (int64, error) {
	n, err := io.Copy(w.ResponseRecorder, src)
	w.viaReadFrom += n
	return n, err
}

// An artifact served through the request log's (and the audit's) status recorder still
// reaches the server's ReadFrom: its zero-copy path, not 32 KiB copies in user space.
func TestRecorderKeepsTheZeroCopyPath(t *testing.T) {
	body := bytes.Repeat([]byte("artifact"), 1<<16)
	serve := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "core.tar.gz", time.Time{}, bytes.NewReader(body))
	})
	w := &readFromRecorder{ResponseRecorder: httptest.NewRecorder()}
	logRequests(zerolog.Nop(), serve).ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/artifacts/b/core.tar.gz", nil))
	require.Equal(t, http.StatusOK, w.Code)
	require.Equal(t, body, w.Body.Bytes())
	require.EqualValues(t, len(body), w.viaReadFrom, "the body went through the server's ReadFrom")

	// The same through two recorders (the audit's inside the log's), and a writer without
	// ReadFrom still gets the whole body.
	w = &readFromRecorder{ResponseRecorder: httptest.NewRecorder()}
	logRequests(zerolog.Nop(), logRequests(zerolog.Nop(), serve)).ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/a", nil))
	require.EqualValues(t, len(body), w.viaReadFrom)
	plain := httptest.NewRecorder()
	logRequests(zerolog.Nop(), serve).ServeHTTP(plain, httptest.NewRequest(http.MethodGet, "/a", nil))
	require.Equal(t, body, plain.Body.Bytes())
}
