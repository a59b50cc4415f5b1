package rest

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/otaflow/otaflow/internal/arn"
	"github.com/otaflow/otaflow/internal/localiot"
)

// permissionFor is what a route takes: reads are for every role, publishing releases for
// release managers, access and settings for admins, every other change for operators.
func permissionFor(pattern string) localiot.Permission {
	method, path, _ := strings.Cut(pattern, " ")
	switch {
	case strings.HasPrefix(path, "/access-keys"), strings.HasPrefix(path, "/users"), path == "/indexing/config" && method != "GET",
		strings.HasPrefix(path, "/provisioning-templates") && method != "GET":
		return localiot.PermAdminister
	case method == "GET" || method == "HEAD",
		method == "POST" && strings.HasPrefix(path, "/indices/"):
		return localiot.PermRead
	case strings.HasPrefix(path, "/artifacts/"), strings.HasPrefix(path, "/tuf/"):
		return localiot.PermPublish
	}
	return localiot.PermOperate
}

// guard serves h to principals whose role allows perm (and, for a key limited to thing
// groups, only changes inside them), and records every change, allowed or not, in the audit
// log. An action may name a path value in braces (rollout.{action}).
func guard(s api, actionPattern string, perm localiot.Permission, targets func(*http.Request) ([]string, error), h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		action := actionPattern
		if i := strings.IndexByte(action, '{'); i >= 0 {
			if j := strings.IndexByte(action[i:], '}'); j > 0 {
				action = action[:i] + r.PathValue(action[i+1:i+j]) + action[i+j+1:]
			}
		}
		p, ok := localiot.PrincipalFrom(r.Context())
		if !ok {
			// Only requests that passed SigV4 get here; one without a principal is a bug.
			writeError(w, localiot.Errorf(localiot.CodeInternal, "request has no authenticated identity"))
			return
		}
		entry := localiot.AuditEntry{Who: p.Name, Role: p.Role, Via: "rest", From: clientOf(r), Action: action, Resource: r.URL.Path}
		if !p.Role.Allows(perm) {
			err := localiot.Denied(p, action, perm)
			entry.Outcome, entry.Detail = localiot.OutcomeDenied, err.Error()
			s.Audit(entry)
			writeError(w, err)
			return
		}
		if perm == localiot.PermRead {
			h.ServeHTTP(w, r)
			return
		}
		if err := s.checkScope(p, r, targets); err != nil {
			entry.Outcome, entry.Detail = localiot.OutcomeDenied, err.Error()
			s.Audit(entry)
			writeError(w, err)
			return
		}
		entry.Reason = r.Header.Get(ReasonHeader)
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(rec, r)
		entry.Outcome = localiot.OutcomeOK
		if rec.status >= 400 {
			entry.Outcome = cmp.Or(w.Header().Get("X-Amzn-Errortype"), http.StatusText(rec.status))
		}
		s.Audit(entry)
	})
}

// ReasonHeader carries the reason a client gives for a change (`--reason`), for the audit log.
const ReasonHeader = "X-Otaflow-Reason"

func clientOf(r *http.Request) string {
	if i := strings.LastIndexByte(r.RemoteAddr, ':'); i > 0 {
		return strings.Trim(r.RemoteAddr[:i], "[]")
	}
	return r.RemoteAddr
}

// checkScope refuses a change by a key limited to thing groups unless every thing, group and
// job it names (in its path, its body, or what targets says a route's change touches) is
// inside them. A change that names none (a certificate, a thing type, a release) is not a
// group's to make.
func (s api) checkScope(p localiot.Principal, r *http.Request, targets func(*http.Request) ([]string, error)) error {
	if len(p.ThingGroups) == 0 {
		return nil
	}
	var named []string
	thing := func(n string) { named = append(named, arn.Name(n)) }
	group := func(n string) { named = append(named, s.ThingGroupArn(arn.Name(n))) }
	if v := r.PathValue("thingName"); v != "" {
		thing(v)
	}
	if v := r.PathValue("thingGroupName"); v != "" {
		group(v)
	}
	if r.Body != nil && r.Body != http.NoBody {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBytes+1))
		if err != nil {
			return localiot.Errorf(localiot.CodeInvalidRequest, "read request body: %v", err)
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		var in struct {
			ThingName      string   `json:"thingName"`
			ThingGroupName string   `json:"thingGroupName"`
			Targets        []string `json:"targets"`
			GroupsToAdd    []string `json:"thingGroupsToAdd"`
			GroupsToRemove []string `json:"thingGroupsToRemove"`
		}
		json.Unmarshal(body, &in) // a body that is not JSON names nothing; the handler says why
		if in.ThingName != "" {
			thing(in.ThingName)
		}
		if in.ThingGroupName != "" {
			group(in.ThingGroupName)
		}
		for _, g := range append(in.GroupsToAdd, in.GroupsToRemove...) {
			group(g)
		}
		named = append(named, in.Targets...)
	}
	if id := r.PathValue("jobId"); id != "" {
		j, err := s.DescribeJob(id)
		var e *localiot.Error
		switch {
		case err == nil:
			named = append(named, j.Targets...)
		case !errors.As(err, &e) || e.Code != localiot.CodeResourceNotFound:
			return err
		} // a new job (CreateJob): its targets are in the body
	}
	if targets != nil {
		more, err := targets(r)
		if err != nil {
			return err
		}
		named = append(named, more...)
	}
	return s.TargetsInScope(p, named)
}

// accessKeyJSON is a key as the API shows it (the secret only when it is new).
type accessKeyJSON struct {
	ID          string   `json:"accessKeyId"`
	Secret      string   `json:"secretAccessKey,omitempty"`
	Role        string   `json:"role"`
	ThingGroups []string `json:"thingGroups,omitempty"`
	Description string   `json:"description,omitempty"`
	Status      string   `json:"status"`
	CreatedAt   *awsTime `json:"createDate"`
	CreatedBy   string   `json:"createdBy,omitempty"`
	ExpiresAt   *awsTime `json:"expiresAt,omitempty"`
	ReplacedBy  string   `json:"replacedBy,omitempty"`
}

func keyJSON(k *localiot.AccessKey) accessKeyJSON {
	return accessKeyJSON{ID: k.ID, Secret: k.Secret, Role: string(k.Role), ThingGroups: k.ThingGroups, Description: k.Description,
		Status: k.Status, CreatedAt: ptime(k.CreatedAt), CreatedBy: k.CreatedBy, ExpiresAt: ptime(k.ExpiresAt), ReplacedBy: k.ReplacedBy}
}

func principalOf(r *http.Request) string {
	p, _ := localiot.PrincipalFrom(r.Context())
	return p.Name
}

func (s api) handleCreateAccessKey(r *http.Request) (any, error) {
	var in struct {
		Role        string   `json:"role"`
		ThingGroups []string `json:"thingGroups"`
		Description string   `json:"description"`
	}
	if err := readJSON(r, &in); err != nil {
		return nil, err
	}
	role, err := localiot.ParseRole(in.Role)
	if err != nil {
		return nil, err
	}
	k, err := s.CreateAccessKey(localiot.AccessKeyInput{Role: role, ThingGroups: in.ThingGroups, Description: in.Description, CreatedBy: principalOf(r)})
	if err != nil {
		return nil, err
	}
	return keyJSON(k), nil
}

func (s api) handleListAccessKeys(r *http.Request) (any, error) {
	keys, err := s.ListAccessKeys()
	if err != nil {
		return nil, err
	}
	out := []accessKeyJSON{}
	for _, k := range keys {
		out = append(out, keyJSON(k))
	}
	return map[string]any{"accessKeys": out}, nil
}

func (s api) handleUpdateAccessKey(r *http.Request) (any, error) {
	var in struct {
		Status string `json:"status"`
	}
	if err := readJSON(r, &in); err != nil {
		return nil, err
	}
	k, err := s.SetAccessKeyStatus(r.PathValue("accessKeyId"), in.Status)
	if err != nil {
		return nil, err
	}
	return keyJSON(k), nil
}

func (s api) handleRotateAccessKey(r *http.Request) (any, error) {
	var in struct {
		GraceSeconds int64 `json:"graceSeconds"`
	}
	if err := readJSON(r, &in); err != nil {
		return nil, err
	}
	k, err := s.RotateAccessKey(r.PathValue("accessKeyId"), time.Duration(in.GraceSeconds)*time.Second, principalOf(r))
	if err != nil {
		return nil, err
	}
	return keyJSON(k), nil
}

func (s api) handleDeleteAccessKey(r *http.Request) (any, error) {
	return nil, s.DeleteAccessKey(r.PathValue("accessKeyId"))
}

// handleWhoAmI answers who signed the request and what it may do.
func (s api) handleWhoAmI(r *http.Request) (any, error) {
	p, _ := localiot.PrincipalFrom(r.Context())
	may := []string{}
	for _, perm := range []localiot.Permission{localiot.PermRead, localiot.PermOperate, localiot.PermPublish, localiot.PermAdminister} {
		if p.Role.Allows(perm) {
			may = append(may, string(perm))
		}
	}
	return map[string]any{"name": p.Name, "role": p.Role, "thingGroups": p.ThingGroups, "permissions": may}, nil
}

func (s api) handleListAuditEntries(r *http.Request) (any, error) {
	q := r.URL.Query()
	in := localiot.AuditQuery{Who: q.Get("who"), Action: q.Get("action"), Resource: q.Get("resource"), Outcome: q.Get("outcome"),
		Via: q.Get("via"), Oldest: q.Get("order") == "oldest", NextToken: q.Get("nextToken")}
	for name, t := range map[string]*time.Time{"since": &in.Since, "until": &in.Until} {
		if v := q.Get(name); v != "" {
			var err error
			if *t, err = time.Parse(time.RFC3339, v); err != nil {
				return nil, localiot.Errorf(localiot.CodeInvalidRequest, "%s %q: give a time as RFC 3339 (2026-12-05T10:00:00Z)", name, v)
			}
		}
	}
	if v := q.Get("maxResults"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return nil, localiot.Errorf(localiot.CodeInvalidRequest, "maxResults must be a number from 1 to 1000")
		}
		in.Limit = n
	}
	if o := q.Get("order"); o != "" && o != "oldest" && o != "newest" {
		return nil, localiot.Errorf(localiot.CodeInvalidRequest, "order %q: use newest (the default) or oldest", o)
	}
	entries, next, err := s.AuditLog(in)
	if err != nil {
		return nil, err
	}
	if entries == nil {
		entries = []localiot.AuditEntry{}
	}
	return map[string]any{"entries": entries, "nextToken": next}, nil
}

// userJSON is a console user as the API shows it (never a password hash).
type userJSON struct {
	Name            string   `json:"userName"`
	Role            string   `json:"role"`
	ThingGroups     []string `json:"thingGroups,omitempty"`
	Disabled        bool     `json:"disabled,omitempty"`
	CreatedAt       *awsTime `json:"createDate"`
	CreatedBy       string   `json:"createdBy,omitempty"`
	PasswordChanged *awsTime `json:"passwordChanged"`
}

func toUserJSON(u *localiot.User) userJSON {
	return userJSON{Name: u.Name, Role: string(u.Role), ThingGroups: u.ThingGroups, Disabled: u.Disabled, CreatedAt: ptime(u.CreatedAt),
		CreatedBy: u.CreatedBy, PasswordChanged: ptime(u.PasswordChanged)}
}

type userBody struct {
	Password    string   `json:"password"`
	Role        string   `json:"role"`
	ThingGroups []string `json:"thingGroups"`
	Disabled    *bool    `json:"disabled"`
}

func (s api) handleCreateUser(r *http.Request) (any, error) {
	var in userBody
	if err := readJSON(r, &in); err != nil {
		return nil, err
	}
	u, err := s.CreateUser(localiot.UserInput{Name: r.PathValue("userName"), Password: in.Password, Role: localiot.Role(in.Role), ThingGroups: in.ThingGroups, By: principalOf(r)})
	if err != nil {
		return nil, err
	}
	return toUserJSON(u), nil
}

func (s api) handleUpdateUser(r *http.Request) (any, error) {
	var in userBody
	if err := readJSON(r, &in); err != nil {
		return nil, err
	}
	u, err := s.UpdateUser(localiot.UserInput{Name: r.PathValue("userName"), Password: in.Password, Role: localiot.Role(in.Role), ThingGroups: in.ThingGroups, Disabled: in.Disabled, By: principalOf(r)})
	if err != nil {
		return nil, err
	}
	return toUserJSON(u), nil
}

func (s api) handleListUsers(r *http.Request) (any, error) {
	users, err := s.ListUsers()
	if err != nil {
		return nil, err
	}
	out := []userJSON{}
	for _, u := range users {
		out = append(out, toUserJSON(u))
	}
	return map[string]any{"users": out}, nil
}

func (s api) handleDeleteUser(r *http.Request) (any, error) {
	return nil, s.DeleteUser(r.PathValue("userName"))
}
