package stack

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDevStackRefusesRebindingHosts: under `starter dev`, a web page that resolves its own
// name to 127.0.0.1 (DNS rebinding) cannot reach the console or the API: only IP addresses
// and localhost are answered, and the one name given as the devices' host.
func TestDevStackRefusesRebindingHosts(t *testing.T) {
	h := hostCheck(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) }), "ota.lan")
	for host, want := range map[string]int{
		"127.0.0.1:4566": http.StatusOK, "localhost:4566": http.StatusOK, "[::1]:4566": http.StatusOK, "192.168.1.20:4566": http.StatusOK,
		"LOCALHOST": http.StatusOK, "evil.example:4566": http.StatusMisdirectedRequest, "127.0.0.1.nip.io": http.StatusMisdirectedRequest,
		"": http.StatusMisdirectedRequest, "ota.lan:4566": http.StatusOK, "OTA.lan.": http.StatusOK, "other.lan:4566": http.StatusMisdirectedRequest,
	} {
		req := httptest.NewRequest("GET", "/console/", nil)
		req.Host = host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		require.Equal(t, want, rec.Code, host)
	}
}
