package console

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oauth2-proxy/mockoidc"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/localiot"
)

// Single sign-on against an OpenID Connect provider started here (mockoidc, on loopback):
// the browser goes to the provider and back, the console verifies the ID token (go-oidc) and
// maps the user's groups to a role; a user in no mapped group, and a callback whose state is
// not this browser's, are refused; every attempt is in the audit log.
func TestSingleSignOnThroughOIDC(t *testing.T) {
	provider, err := mockoidc.Run()
	require.NoError(t, err)
	defer provider.Shutdown()
	cfg := provider.Config()

	svc, err := localiot.Open(localiot.Options{Path: filepath.Join(t.TempDir(), "jobs.db"), Logger: zerolog.Nop()})
	require.NoError(t, err)
	defer svc.Close()
	roles, err := ParseRoleMap([]string{"ota-ops=operator", "ota-admins=admin", "everyone=viewer"})
	require.NoError(t, err)
	_, err = ParseRoleMap([]string{"ota-ops=root"})
	require.ErrorContains(t, err, "use one of viewer")
	con := New(Options{Users: svc, Audit: func(e localiot.AuditEntry) { svc.Audit(e) }, RequireSignIn: true,
		OIDC: &OIDC{Issuer: cfg.Issuer, ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, Roles: roles}})
	srv := httptest.NewServer(con.Handler("/console/"))
	defer srv.Close()
	con.oidc.o.RedirectURL = srv.URL + "/console/api/oidc/callback"

	browser := func() *http.Client {
		jar, _ := cookiejar.New(nil)
		return &http.Client{Jar: jar}
	}
	session := func(c *http.Client) map[string]any {
		resp, err := c.Get(srv.URL + "/console/api/session")
		require.NoError(t, err)
		defer resp.Body.Close()
		var out map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
		return out
	}
	login := func(c *http.Client, user *mockoidc.MockUser) (int, string) {
		provider.QueueUser(user)
		resp, err := c.Get(srv.URL + "/console/api/oidc/login")
		require.NoError(t, err)
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}

	jane := browser()
	require.Equal(t, map[string]any{"signedIn": false, "sso": true}, session(jane))
	code, page := login(jane, &mockoidc.MockUser{Subject: "u-1", PreferredUsername: "jane", Email: "jane@example.com", Groups: []string{"everyone", "ota-ops"}})
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, page, "otaflow fleet console", "back on the console's page")
	s := session(jane)
	require.Equal(t, true, s["signedIn"])
	require.Equal(t, "jane", s["user"])
	require.Equal(t, "operator", s["role"], "the most powerful of her groups' roles")

	// A user in no mapped group is refused, and says which groups it has.
	mallory := browser()
	code, page = login(mallory, &mockoidc.MockUser{Subject: "u-2", PreferredUsername: "mallory", Groups: []string{"contractors"}})
	require.Equal(t, http.StatusForbidden, code)
	require.Contains(t, page, "mallory's groups (contractors) map to no otaflow role")
	require.Equal(t, false, session(mallory)["signedIn"])

	// A callback that is not this browser's sign-in (a forged or replayed link) is refused.
	resp, err := browser().Get(srv.URL + "/console/api/oidc/callback?code=x&state=forged")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Contains(t, string(body), "state does not match")

	entries, _, err := svc.AuditLog(localiot.AuditQuery{Action: "sign-in", Oldest: true})
	require.NoError(t, err)
	var lines []string
	for _, e := range entries {
		lines = append(lines, e.Who+" "+string(e.Role)+" "+e.Outcome)
		require.True(t, strings.HasPrefix(e.Resource, "oidc:"+cfg.Issuer))
	}
	require.Equal(t, []string{"jane operator ok", "mallory  refused", "anonymous  refused"}, lines)
}
