package console

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/otaflow/otaflow/internal/localiot"
)

// OIDC is single sign-on through an OpenID Connect provider (Keycloak, Dex, Okta, Entra ID,
// Google…): the console sends the browser to the provider (authorization code flow with PKCE,
// state and nonce), verifies the ID token it gets back (go-oidc: issuer, audience, expiry,
// signature from the provider's keys) and maps the user's groups to a role.
type OIDC struct {
	Issuer       string
	ClientID     string
	ClientSecret string
	// RedirectURL is the console's callback as the provider knows it
	// (https://HOST/console/api/oidc/callback).
	RedirectURL string
	// GroupsClaim names the ID token's claim that lists the user's groups (default "groups").
	GroupsClaim string
	// Roles maps a provider group to a role; a user in several gets the most powerful, a user
	// in none is refused.
	Roles map[string]localiot.Role
}

// ParseRoleMap reads GROUP=ROLE pairs (the --oidc-role flag's).
func ParseRoleMap(pairs []string) (map[string]localiot.Role, error) {
	out := map[string]localiot.Role{}
	for _, p := range pairs {
		g, r, ok := strings.Cut(p, "=")
		if !ok || g == "" {
			return nil, fmt.Errorf("--oidc-role %q: use GROUP=ROLE, e.g. ota-admins=admin", p)
		}
		role, err := localiot.ParseRole(r)
		if err != nil {
			return nil, fmt.Errorf("--oidc-role %q: %w", p, err)
		}
		out[g] = role
	}
	return out, nil
}

const (
	oidcStateCookie = "otaflow_oidc_state"
	oidcLoginTTL    = 10 * time.Minute
	maxOIDCLogins   = 10000
)

// oidcLogin is a sign-in on its way through the provider.
type oidcLogin struct {
	nonce, verifier string
	at              time.Time
}

type oidcClient struct {
	o        OIDC
	mu       sync.Mutex
	provider *oidc.Provider
	logins   map[string]oidcLogin // by state
}

// setup discovers the provider once it is first needed (so the console starts while the
// provider is down).
func (oc *oidcClient) setup(ctx context.Context) (*oauth2.Config, *oidc.IDTokenVerifier, error) {
	oc.mu.Lock()
	defer oc.mu.Unlock()
	if oc.provider == nil {
		p, err := oidc.NewProvider(ctx, oc.o.Issuer)
		if err != nil {
			return nil, nil, fmt.Errorf("the sign-on provider %s does not answer: %w", oc.o.Issuer, err)
		}
		oc.provider = p
	}
	scopes := []string{oidc.ScopeOpenID, "profile", "email", "groups"}
	cfg := &oauth2.Config{ClientID: oc.o.ClientID, ClientSecret: oc.o.ClientSecret, Endpoint: oc.provider.Endpoint(), RedirectURL: oc.o.RedirectURL, Scopes: scopes}
	return cfg, oc.provider.Verifier(&oidc.Config{ClientID: oc.o.ClientID}), nil
}

func (oc *oidcClient) remember(state string, l oidcLogin) {
	oc.mu.Lock()
	defer oc.mu.Unlock()
	if oc.logins == nil || len(oc.logins) >= maxOIDCLogins {
		for k, v := range oc.logins {
			if time.Since(v.at) > oidcLoginTTL {
				delete(oc.logins, k)
			}
		}
		if oc.logins == nil || len(oc.logins) >= maxOIDCLogins {
			oc.logins = map[string]oidcLogin{}
		}
	}
	oc.logins[state] = l
}

// take is the sign-in a state names, once.
func (oc *oidcClient) take(state string) (oidcLogin, bool) {
	oc.mu.Lock()
	defer oc.mu.Unlock()
	l, ok := oc.logins[state]
	delete(oc.logins, state)
	return l, ok && time.Since(l.at) <= oidcLoginTTL
}

// handleOIDCLogin sends the browser to the provider.
func (c *Console) handleOIDCLogin(w http.ResponseWriter, r *http.Request) {
	if c.oidc == nil {
		http.Error(w, "single sign-on is not configured (--oidc-issuer)", http.StatusNotFound)
		return
	}
	cfg, _, err := c.oidc.setup(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	state, nonce, verifier := randomToken(), randomToken(), oauth2.GenerateVerifier()
	c.oidc.remember(state, oidcLogin{nonce: nonce, verifier: verifier, at: time.Now()})
	// Lax, not Strict: the provider's redirect back is a navigation from another site.
	http.SetCookie(w, &http.Cookie{Name: oidcStateCookie, Value: state, Path: c.prefix, HttpOnly: true, SameSite: http.SameSiteLaxMode,
		Secure: secureRequest(r), MaxAge: int(oidcLoginTTL / time.Second)})
	http.Redirect(w, r, cfg.AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier)), http.StatusFound)
}

func secureRequest(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

// handleOIDCCallback takes the provider's answer: it checks the state against the browser's
// cookie, exchanges the code (with the PKCE verifier), verifies the ID token and its nonce,
// maps the groups to a role and starts a session.
func (c *Console) handleOIDCCallback(w http.ResponseWriter, r *http.Request) {
	if c.oidc == nil {
		http.Error(w, "single sign-on is not configured (--oidc-issuer)", http.StatusNotFound)
		return
	}
	entry := localiot.AuditEntry{Via: "console", From: clientOf(r), Action: "sign-in", Resource: "oidc:" + c.oidc.o.Issuer, Outcome: localiot.OutcomeOK}
	fail := func(status int, who, msg string) {
		entry.Who, entry.Outcome, entry.Detail = cmp.Or(who, "anonymous"), localiot.OutcomeRefused, msg
		c.audit(entry)
		c.o.Logger.Warn().Str("client", entry.From).Str("user", who).Msg("console: single sign-on refused: " + msg)
		http.Error(w, "single sign-on refused: "+msg, status)
	}
	q := r.URL.Query()
	if e := q.Get("error"); e != "" {
		fail(http.StatusUnauthorized, "", "the provider said "+e+": "+q.Get("error_description"))
		return
	}
	state := q.Get("state")
	ck, err := r.Cookie(oidcStateCookie)
	if err != nil || state == "" || !equalSecret(ck.Value, state) {
		fail(http.StatusBadRequest, "", "the sign-in's state does not match this browser's: start again from the console")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: oidcStateCookie, Value: "", Path: c.prefix, MaxAge: -1, HttpOnly: true})
	login, ok := c.oidc.take(state)
	if !ok {
		fail(http.StatusBadRequest, "", "this sign-in is unknown or older than 10 minutes: start again from the console")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	cfg, verifier, err := c.oidc.setup(ctx)
	if err != nil {
		fail(http.StatusBadGateway, "", err.Error())
		return
	}
	tok, err := cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(login.verifier))
	if err != nil {
		fail(http.StatusUnauthorized, "", "the provider did not exchange the code: "+err.Error())
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		fail(http.StatusUnauthorized, "", "the provider's answer has no ID token")
		return
	}
	idt, err := verifier.Verify(ctx, raw)
	if err != nil {
		fail(http.StatusUnauthorized, "", "the ID token does not verify: "+err.Error())
		return
	}
	if !equalSecret(idt.Nonce, login.nonce) {
		fail(http.StatusUnauthorized, "", "the ID token's nonce is not this sign-in's")
		return
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		fail(http.StatusUnauthorized, "", "the ID token's claims: "+err.Error())
		return
	}
	name := cmp.Or(str(claims["preferred_username"]), cmp.Or(str(claims["email"]), idt.Subject))
	groups := strs(claims[cmp.Or(c.oidc.o.GroupsClaim, "groups")])
	role, ok := c.oidc.roleOf(groups)
	if !ok {
		fail(http.StatusForbidden, name, fmt.Sprintf("%s's groups (%s) map to no otaflow role: an admin maps them with --oidc-role GROUP=ROLE", name, strings.Join(groups, ", ")))
		return
	}
	p := localiot.Principal{Name: name, Role: role}
	token, _ := c.sessions.start(p, time.Now(), true)
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: token, Path: c.prefix, HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: secureRequest(r), MaxAge: int(sessionMax / time.Second)})
	entry.Who, entry.Role = name, role
	c.audit(entry)
	http.Redirect(w, r, c.prefix, http.StatusFound)
}

// roleOf is the most powerful role the groups map to.
func (oc *oidcClient) roleOf(groups []string) (localiot.Role, bool) {
	best := -1
	for _, g := range groups {
		if r, ok := oc.o.Roles[g]; ok {
			best = max(best, slices.Index(localiot.Roles, r))
		}
	}
	if best < 0 {
		return "", false
	}
	return localiot.Roles[best], true
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func strs(v any) []string {
	switch x := v.(type) {
	case []any:
		var out []string
		for _, e := range x {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	case string:
		return []string{x}
	}
	return nil
}
