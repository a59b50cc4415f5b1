package console

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sync"
	"time"

	"github.com/otaflow/otaflow/internal/localiot"
)

// Users signs console users in: the jobs service's (localiot.Service).
type Users interface {
	Authenticate(name, password string) (localiot.Principal, error)
	// UserPrincipal is who a signed-in user is now (false: it may no longer sign in).
	UserPrincipal(p localiot.Principal) (localiot.Principal, bool, error)
	HasUsers() (bool, error)
	// TargetsInScope refuses a principal limited to thing groups a change of targets outside them.
	TargetsInScope(p localiot.Principal, targets []string) error
}

// Sessions: a sign-in gets a random token in an HttpOnly, SameSite=Strict cookie and a CSRF
// token the page sends with every change. A session ends after sessionIdle without a request,
// after sessionMax in any case, at sign-out, and when its user is disabled, deleted or changes
// password. Sessions live in this process: a restart signs everyone out.
const (
	sessionCookie = "otaflow_session"
	sessionIdle   = 30 * time.Minute
	sessionMax    = 8 * time.Hour
	maxSessions   = 10000
)

// adminUser is the user name the console password (--console-password) signs in.
const adminUser = "admin"

type session struct {
	p localiot.Principal
	// external is a single sign-on's session: its user is the provider's, not the store's.
	external bool
	csrf     string
	started  time.Time
	lastSeen time.Time
}

type sessions struct {
	mu sync.Mutex
	m  map[[32]byte]*session // by the token's SHA-256: a memory dump holds no usable token
}

func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (s *sessions) start(p localiot.Principal, now time.Time, external bool) (token string, sess *session) {
	token = randomToken()
	sess = &session{p: p, external: external, csrf: randomToken(), started: now, lastSeen: now}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[[32]byte]*session{}
	}
	if len(s.m) >= maxSessions {
		for k, v := range s.m {
			if now.Sub(v.lastSeen) > sessionIdle || now.Sub(v.started) > sessionMax {
				delete(s.m, k)
			}
		}
		if len(s.m) >= maxSessions {
			for k := range s.m { // still full: the oldest are as good as any to end
				delete(s.m, k)
				break
			}
		}
	}
	s.m[sha256.Sum256([]byte(token))] = sess
	return token, sess
}

// get is the live session of a token (nil: none), its idle clock restarted.
func (s *sessions) get(token string, now time.Time) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := sha256.Sum256([]byte(token))
	sess := s.m[k]
	if sess == nil {
		return nil
	}
	if now.Sub(sess.lastSeen) > sessionIdle || now.Sub(sess.started) > sessionMax {
		delete(s.m, k)
		return nil
	}
	sess.lastSeen = now
	return sess
}

func (s *sessions) end(token string) {
	s.mu.Lock()
	delete(s.m, sha256.Sum256([]byte(token)))
	s.mu.Unlock()
}

// openConsole is whether the console needs no sign-in: no password and no users (a local
// development stack's).
func (c *Console) openConsole() bool {
	if c.o.Password != "" || c.o.RequireSignIn || c.oidc != nil {
		return false
	}
	if c.o.Users == nil {
		return true
	}
	has, err := c.o.Users.HasUsers()
	return err == nil && !has
}

// errSignIn asks the page to show its sign-in form.
var errSignIn = errors.New("sign in to the console")

// principal is who makes a request: a session's user, a user by HTTP basic auth (scripts), or,
// on an open console, the local operator. A POST with a session must carry its CSRF token.
func (c *Console) principal(w http.ResponseWriter, r *http.Request) (localiot.Principal, bool) {
	if c.openConsole() {
		return localiot.Principal{Name: "console", Role: localiot.RoleAdmin}, true
	}
	if ck, err := r.Cookie(sessionCookie); err == nil {
		if sess := c.sessions.get(ck.Value, time.Now()); sess != nil {
			p, ok := sess.p, true
			if !sess.external && (p.Name != adminUser || c.o.Password == "") {
				var err error
				if p, ok, err = c.o.Users.UserPrincipal(sess.p); err != nil {
					writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "the jobs service does not answer: " + err.Error()})
					return p, false
				}
			}
			if !ok {
				c.sessions.end(ck.Value)
				writeJSON(w, http.StatusUnauthorized, map[string]any{"error": "your session ended (the user was changed or removed): sign in again", "signIn": true})
				return p, false
			}
			if r.Method == http.MethodPost && !equalSecret(r.Header.Get("X-CSRF-Token"), sess.csrf) {
				writeJSON(w, http.StatusForbidden, map[string]string{"error": "this change does not carry the session's CSRF token: reload the console"})
				return p, false
			}
			return p, true
		}
	}
	if user, pw, ok := r.BasicAuth(); ok {
		return c.signIn(w, r, user, pw)
	}
	writeJSON(w, http.StatusUnauthorized, map[string]any{"error": errSignIn.Error(), "signIn": true})
	return localiot.Principal{}, false
}

// signIn checks a user name and password, within the guessing limits, and records the
// attempt; it answers the request itself when it fails.
func (c *Console) signIn(w http.ResponseWriter, r *http.Request, user, pw string) (localiot.Principal, bool) {
	client := clientOf(r)
	if d := c.guard.wait(client); d > 0 {
		secs := int(math.Ceil(d.Seconds()))
		w.Header().Set("Retry-After", fmt.Sprint(secs))
		writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": fmt.Sprintf("too many wrong passwords: try again in %d s", secs)})
		return localiot.Principal{}, false
	}
	var p localiot.Principal
	var err error = localiot.ErrSignIn
	switch {
	case len(pw) > maxPasswordBytes:
	case user == adminUser && c.o.Password != "":
		if equalSecret(pw, c.o.Password) {
			p, err = localiot.Principal{Name: adminUser, Role: localiot.RoleAdmin}, nil
		}
	case c.o.Users != nil:
		p, err = c.o.Users.Authenticate(user, pw)
	}
	entry := localiot.AuditEntry{Who: user, Via: "console", From: client, Action: "sign-in", Outcome: localiot.OutcomeOK}
	if err != nil {
		var e *localiot.Error
		if !errors.As(err, &e) || e.Code != localiot.CodeUnauthorized {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "the jobs service does not answer: " + err.Error()})
			return p, false
		}
		c.guard.failed(client)
		c.o.Logger.Warn().Str("client", client).Msg("console: sign-in refused")
		entry.Outcome, entry.Detail = localiot.OutcomeRefused, e.Message
		c.audit(entry)
		writeJSON(w, http.StatusUnauthorized, map[string]any{"error": e.Message, "signIn": true})
		return p, false
	}
	if r.URL.Path == "/api/sign-in" {
		entry.Role = p.Role
		c.audit(entry) // a script's basic auth on every call is not a sign-in each time
	}
	return p, true
}

func (c *Console) audit(e localiot.AuditEntry) {
	if c.o.Audit != nil {
		c.o.Audit(e)
	}
}

func (c *Console) handleSignIn(w http.ResponseWriter, r *http.Request) {
	var in struct {
		User     string `json:"user"`
		Password string `json:"password"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<10)).Decode(&in); err != nil || in.User == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "give a user name and a password"})
		return
	}
	p, ok := c.signIn(w, r, in.User, in.Password)
	if !ok {
		return
	}
	token, sess := c.sessions.start(p, time.Now(), false)
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: token, Path: c.prefix, HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: secureRequest(r), MaxAge: int(sessionMax / time.Second)})
	writeJSON(w, http.StatusOK, sessionInfo(p, sess.csrf, true))
}

func (c *Console) handleSignOut(w http.ResponseWriter, r *http.Request) {
	if ck, err := r.Cookie(sessionCookie); err == nil {
		c.sessions.end(ck.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: c.prefix, MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	writeJSON(w, http.StatusOK, map[string]string{"message": "signed out"})
}

// handleSession tells the page who is signed in and the CSRF token its changes carry.
func (c *Console) handleSession(w http.ResponseWriter, r *http.Request) {
	if c.openConsole() {
		writeJSON(w, http.StatusOK, map[string]any{"signedIn": true, "open": true, "user": "console", "role": localiot.RoleAdmin, "csrf": ""})
		return
	}
	if ck, err := r.Cookie(sessionCookie); err == nil {
		if sess := c.sessions.get(ck.Value, time.Now()); sess != nil {
			writeJSON(w, http.StatusOK, sessionInfo(sess.p, sess.csrf, true))
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"signedIn": false, "sso": c.oidc != nil})
}

func sessionInfo(p localiot.Principal, csrf string, signedIn bool) map[string]any {
	return map[string]any{"signedIn": signedIn, "user": p.Name, "role": p.Role, "thingGroups": p.ThingGroups, "csrf": csrf,
		"mayOperate": p.Role.Allows(localiot.PermOperate)}
}
