package console

import (
	"fmt"
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

// TestPasswordGuessingIsSlowed is issue #22's guessing loop (600 guesses in 0.13 s): after
// five wrong passwords a client is told when to try again, and its guesses are not checked
// until then; the right password from another client still works; everyone together gets
// 30 a minute.
func TestPasswordGuessingIsSlowed(t *testing.T) {
	c := New(Options{Password: "correct horse battery staple"})
	now := time.Now()
	c.guard.now = func() time.Time { return now }
	h := c.Handler("/console/")
	try := func(client, pw string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", "/console/", nil)
		req.RemoteAddr = client + ":40000"
		req.SetBasicAuth("x", pw)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	for i := range 5 {
		require.Equal(t, http.StatusUnauthorized, try("10.0.0.1", fmt.Sprint("guess", i)).Code)
	}
	rec := try("10.0.0.1", "correct horse battery staple")
	require.Equal(t, http.StatusTooManyRequests, rec.Code, "even the right password waits: guesses are not checked")
	require.Contains(t, rec.Body.String(), "try again in 12 s")
	require.Equal(t, "12", rec.Header().Get("Retry-After"))
	require.Equal(t, http.StatusOK, try("10.0.0.2", "correct horse battery staple").Code, "another client is not locked out")
	now = now.Add(12 * time.Second)
	require.Equal(t, http.StatusOK, try("10.0.0.1", "correct horse battery staple").Code)

	require.Equal(t, http.StatusUnauthorized, try("10.0.0.3", strings.Repeat("a", 5000)).Code, "an endless password is refused")
	// From many addresses: the overall bound.
	limited := 0
	for i := range 100 {
		if try(fmt.Sprintf("10.1.%d.%d", i/250, i%250), "wrong").Code == http.StatusTooManyRequests {
			limited++
		}
	}
	require.GreaterOrEqual(t, limited, 100-totalGuessBurst)
}

func TestConsolePasswordStrength(t *testing.T) {
	for _, weak := range []string{"pw", "password1", "Passw0rd", strings.Repeat("a", 25), "abcdefghijk"} {
		require.Error(t, CheckPassword(weak), weak)
	}
	for _, strong := range []string{"correct horse battery staple", "Xk9-tr7#Lq2z", "6f1c0b9d4e3a2f1b0c9d8e7f6a5b4c3d"} {
		require.NoError(t, CheckPassword(strong), strong)
	}
}
