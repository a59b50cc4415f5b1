package console

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A device is connected only while it said so and checks in when it promised.
func TestConnectedNeedsARecentCheckIn(t *testing.T) {
	now := time.Now()
	shadow := func(connected bool, age time.Duration) *Shadow {
		sh := &Shadow{Timestamp: now.Add(-age).Unix()}
		sh.State.Reported = map[string]any{"connected": connected, "checkInSeconds": float64(600),
			"software": map[string]any{"core": "1.2.3"}, "lastJob": map[string]any{"status": "FAILED", "reason": "disk full"}}
		return sh
	}
	d := deviceFrom("d1", shadow(true, time.Minute), now)
	require.True(t, d.Connected)
	require.Equal(t, "1.2.3", d.Software["core"])
	require.Equal(t, "disk full", d.LastJob["reason"])
	require.False(t, deviceFrom("d1", shadow(true, 30*time.Minute), now).Connected, "silent past twice its check-in interval: gone")
	require.False(t, deviceFrom("d1", shadow(false, time.Second), now).Connected, "said goodbye")
}

// The console refuses callers without its password, and steering calls that do not come from
// its own page.
func TestConsoleGuardsItsDoors(t *testing.T) {
	srv := httptest.NewServer(New(Options{Password: "pw"}).Handler("/console/"))
	defer srv.Close()
	do := func(method, path string, auth bool, header map[string]string) int {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader("{}"))
		if auth {
			req.SetBasicAuth("operator", "pw")
		}
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusUnauthorized, do("GET", "/console/", false, nil))
	require.Equal(t, http.StatusOK, do("GET", "/console/", true, nil), "the page")
	require.Equal(t, http.StatusForbidden, do("POST", "/console/api/rollouts/r1/pause", true, nil), "no console header: a cross-site form")
	require.Equal(t, http.StatusForbidden, do("POST", "/console/api/rollouts/r1/pause", true,
		map[string]string{"X-Otaflow-Console": "1", "Origin": "https://evil.example"}), "another origin")
	require.Equal(t, http.StatusNotFound, do("POST", "/console/api/rollouts/r1/explode", true,
		map[string]string{"X-Otaflow-Console": "1"}), "an unknown action")
}
