package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/localiot"
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

// The console serves its page to anyone (it holds no data), refuses API callers that are not
// signed in, and steering calls that do not come from its own page.
func TestConsoleGuardsItsDoors(t *testing.T) {
	srv := httptest.NewServer(New(Options{Password: "pw"}).Handler("/console/"))
	defer srv.Close()
	do := func(method, path string, auth bool, header map[string]string) int {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader("{}"))
		if auth {
			req.SetBasicAuth("admin", "pw")
		}
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusOK, do("GET", "/console/", false, nil), "the page, which shows the sign-in form")
	require.Equal(t, http.StatusUnauthorized, do("GET", "/console/api/overview", false, nil))
	require.Equal(t, http.StatusForbidden, do("POST", "/console/api/rollouts/r1/pause", true, nil), "no console header: a cross-site form")
	require.Equal(t, http.StatusForbidden, do("POST", "/console/api/rollouts/r1/pause", true,
		map[string]string{"X-Otaflow-Console": "1", "Origin": "https://evil.example"}), "another origin")
	require.Equal(t, http.StatusNotFound, do("POST", "/console/api/rollouts/r1/explode", true,
		map[string]string{"X-Otaflow-Console": "1"}), "an unknown action")
	require.Equal(t, http.StatusForbidden, do("POST", "/console/api/sign-in", false, nil), "even a sign-in comes from the page")
}

// Users sign in with their own passwords (bcrypt, in the jobs store) and get a session cookie
// and a CSRF token; a change without the token is refused; a viewer may not steer; a session
// ends at sign-out and when its user is disabled; every sign-in, refusal and steering call is
// in the audit log.
func TestSessionsRolesAndCSRF(t *testing.T) {
	svc, err := localiot.Open(localiot.Options{Path: filepath.Join(t.TempDir(), "jobs.db"), Logger: zerolog.Nop()})
	require.NoError(t, err)
	defer svc.Close()
	for name, role := range map[string]localiot.Role{"alice": localiot.RoleOperator, "victor": localiot.RoleViewer} {
		_, err := svc.CreateUser(localiot.UserInput{Name: name, Password: "a long enough password " + name, Role: role})
		require.NoError(t, err)
	}
	_, err = svc.CreateUser(localiot.UserInput{Name: "weak", Password: "password1", Role: localiot.RoleViewer})
	require.ErrorContains(t, err, "too easy to guess")
	srv := httptest.NewServer(New(Options{Users: svc, Audit: func(e localiot.AuditEntry) { svc.Audit(e) }}).Handler("/console/"))
	defer srv.Close()

	type browser struct {
		c    *http.Client
		csrf string
	}
	newBrowser := func() *browser {
		jar, _ := cookiejar.New(nil)
		return &browser{c: &http.Client{Jar: jar}}
	}
	call := func(b *browser, method, path, body string, csrf bool) (int, map[string]any) {
		req, _ := http.NewRequest(method, srv.URL+"/console/api/"+path, strings.NewReader(body))
		req.Header.Set("X-Otaflow-Console", "1")
		if csrf {
			req.Header.Set("X-CSRF-Token", b.csrf)
		}
		resp, err := b.c.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	signIn := func(b *browser, user, pw string) int {
		code, out := call(b, "POST", "sign-in", fmt.Sprintf(`{"user":%q,"password":%q}`, user, pw), false)
		if code == http.StatusOK {
			b.csrf = out["csrf"].(string)
		}
		return code
	}

	alice, victor := newBrowser(), newBrowser()
	code, out := call(alice, "GET", "overview", "", false)
	require.Equal(t, http.StatusUnauthorized, code)
	require.Equal(t, true, out["signIn"])
	require.Equal(t, http.StatusUnauthorized, signIn(alice, "alice", "wrong"))
	require.Equal(t, http.StatusUnauthorized, signIn(alice, "admin", "anything"), "no console password: no admin user")
	require.Equal(t, http.StatusOK, signIn(alice, "alice", "a long enough password alice"))
	_, out = call(alice, "GET", "session", "", false)
	require.Equal(t, "alice", out["user"])
	require.Equal(t, true, out["mayOperate"])

	code, out = call(alice, "POST", "rollouts/r1/explode", "{}", false)
	require.Equal(t, http.StatusForbidden, code, "no CSRF token")
	require.Contains(t, out["error"], "CSRF")
	code, _ = call(alice, "POST", "rollouts/r1/explode", "{}", true)
	require.Equal(t, http.StatusNotFound, code, "signed in, with the token: the action itself is unknown")

	require.Equal(t, http.StatusOK, signIn(victor, "victor", "a long enough password victor"))
	code, out = call(victor, "POST", "rollouts/r1/pause", `{"reason":"looks odd"}`, true)
	require.Equal(t, http.StatusForbidden, code)
	require.Contains(t, out["error"], "victor (role viewer) may not pause a rollout: it needs the operator or admin role")

	disabled := true
	_, err = svc.UpdateUser(localiot.UserInput{Name: "victor", Disabled: &disabled})
	require.NoError(t, err)
	code, out = call(victor, "POST", "rollouts/r1/pause", "{}", true)
	require.Equal(t, http.StatusUnauthorized, code, "a disabled user's session ends")
	require.Contains(t, out["error"], "session ended")

	call(alice, "POST", "sign-out", "", true)
	code, _ = call(alice, "POST", "rollouts/r1/explode", "{}", true)
	require.Equal(t, http.StatusUnauthorized, code, "signed out")

	entries, _, err := svc.AuditLog(localiot.AuditQuery{Oldest: true})
	require.NoError(t, err)
	var lines []string
	for _, e := range entries {
		lines = append(lines, strings.Join([]string{e.Who, e.Via, e.Action, e.Resource, e.Reason, e.Outcome}, " "))
	}
	require.Equal(t, []string{
		"alice console sign-in   refused",
		"admin console sign-in   refused",
		"alice console sign-in   ok",
		"alice console rollout.explode /rollouts/r1/explode  Not Found",
		"victor console sign-in   ok",
		"victor console rollout.pause /rollouts/r1/pause looks odd denied",
	}, lines)
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
		body, _ := json.Marshal(map[string]string{"user": "admin", "password": pw})
		req := httptest.NewRequest("POST", "/console/api/sign-in", bytes.NewReader(body))
		req.Header.Set("X-Otaflow-Console", "1")
		req.RemoteAddr = client + ":40000"
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
