package localiot

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/otaflow/otaflow/internal/arn"
	"github.com/otaflow/otaflow/internal/localiot/store"
)

// Who may do what: every REST request is signed with an access key, and every key (and every
// console user) holds one role. The key the service is configured with (--access-key-id) is
// the first admin's; the keys admins create live in the jobs store (bbolt or PostgreSQL), so
// every replica knows them.

// Role is what an identity may do.
type Role string

const (
	// RoleViewer reads everything and changes nothing.
	RoleViewer Role = "viewer"
	// RoleOperator starts, steers and rolls back rollouts and manages things and groups.
	RoleOperator Role = "operator"
	// RoleReleaseManager publishes releases (artifacts and their signed metadata). The TUF
	// root key is never the service's to hold: a release manager signs targets with the keys
	// root delegates to.
	RoleReleaseManager Role = "release-manager"
	// RoleAdmin does everything, and alone manages users, keys and settings.
	RoleAdmin Role = "admin"
)

// Roles are every role, least power first.
var Roles = []Role{RoleViewer, RoleOperator, RoleReleaseManager, RoleAdmin}

// Permission is a kind of request.
type Permission string

const (
	PermRead       Permission = "read"       // every read
	PermOperate    Permission = "operate"    // jobs (rollouts), things, groups, certificates
	PermPublish    Permission = "publish"    // artifacts and release metadata
	PermAdminister Permission = "administer" // access keys, users, settings
)

// Allows reports whether the role may make requests of the permission.
func (r Role) Allows(p Permission) bool {
	switch r {
	case RoleAdmin:
		return true
	case RoleOperator:
		return p == PermRead || p == PermOperate
	case RoleReleaseManager:
		return p == PermRead || p == PermPublish
	case RoleViewer:
		return p == PermRead
	}
	return false
}

// Needs names the roles a permission takes, for a refusal's message.
func (p Permission) Needs() string {
	var out []string
	for _, r := range Roles {
		if r.Allows(p) {
			out = append(out, string(r))
		}
	}
	return strings.Join(out, " or ")
}

// ParseRole is a role by name, or an error that lists them.
func ParseRole(s string) (Role, error) {
	r := Role(strings.ToLower(strings.TrimSpace(s)))
	if slices.Contains(Roles, r) {
		return r, nil
	}
	return "", Errorf(CodeInvalidRequest, "role %q: use one of viewer, operator, release-manager, admin", s)
}

// Principal is who a request comes from: an access key, a console user, or the configured key.
type Principal struct {
	Name string `json:"name"`
	Role Role   `json:"role"`
	// ThingGroups limits the changes it may make to the things of these groups (and of the
	// groups below them); empty: the whole fleet.
	ThingGroups []string `json:"thingGroups,omitempty"`
	// PasswordSet is, for a console user, when the password it signed in with was set: a
	// session outlives no password change.
	PasswordSet time.Time `json:"-"`
}

type principalKey struct{}

// WithPrincipal is ctx carrying who makes the request.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom is who makes the request of ctx (false: nobody said).
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

const recordAccessKey = "access-key"

// Key statuses, as IAM names them.
const (
	KeyActive   = "Active"
	KeyInactive = "Inactive"
)

// AccessKey is a key REST clients sign with.
type AccessKey struct {
	ID     string `json:"accessKeyId"`
	Secret string `json:"secretAccessKey,omitempty"`
	Role   Role   `json:"role"`
	// ThingGroups limits its changes to these groups' things (see Principal).
	ThingGroups []string  `json:"thingGroups,omitempty"`
	Description string    `json:"description,omitempty"`
	Status      string    `json:"status"`
	CreatedAt   time.Time `json:"createDate"`
	CreatedBy   string    `json:"createdBy,omitempty"`
	// ExpiresAt ends a rotated key's grace period.
	ExpiresAt  time.Time `json:"expiresAt,omitzero"`
	ReplacedBy string    `json:"replacedBy,omitempty"`
}

// AccessKeyInput is what a new key is for.
type AccessKeyInput struct {
	Role        Role
	ThingGroups []string
	Description string
	CreatedBy   string
}

// MaxAccessKeys bounds the keys one service keeps (each request looks one up).
const MaxAccessKeys = 1000

var keyIDEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// newAccessKey makes an ID (OTFA and 16 characters, like AWS's AKIA…) and a 40-character
// secret from the system's random source.
func newAccessKey() (id, secret string) {
	b := make([]byte, 40)
	rand.Read(b)
	return "OTFA" + keyIDEncoding.EncodeToString(b[:10]), base64.RawStdEncoding.EncodeToString(b[10:])
}

// CreateAccessKey makes a key for a role; its secret is in the answer and, afterwards, never
// listed again.
func (s *Service) CreateAccessKey(in AccessKeyInput) (*AccessKey, error) {
	if _, err := ParseRole(string(in.Role)); err != nil {
		return nil, err
	}
	if len(in.Description) > 256 {
		return nil, Errorf(CodeInvalidRequest, "description: at most 256 characters")
	}
	id, secret := newAccessKey()
	k := &AccessKey{ID: id, Secret: secret, Role: in.Role, ThingGroups: in.ThingGroups, Description: in.Description,
		Status: KeyActive, CreatedAt: s.Clock(), CreatedBy: in.CreatedBy}
	err := s.st.Update(func(t store.Tx) error {
		if err := checkGroupsExist(t, in.ThingGroups); err != nil {
			return err
		}
		all, err := t.Records(recordAccessKey)
		if err != nil {
			return err
		}
		if len(all) >= MaxAccessKeys {
			return Errorf(CodeLimitExceeded, "there are %d access keys, the most this service keeps; delete keys no one uses (`starter access list`)", len(all))
		}
		return putRecord(t, recordAccessKey, id, k)
	})
	if err != nil {
		return nil, err
	}
	s.keys.forget(id)
	return k, nil
}

func checkGroupsExist(t store.Tx, groups []string) error {
	for _, g := range groups {
		grp, err := t.Group(g)
		if err != nil {
			return err
		}
		if grp == nil {
			return Errorf(CodeResourceNotFound, "thing group %s does not exist: create it first, or limit the key to groups that do", g)
		}
	}
	return nil
}

// ListAccessKeys is every key, without secrets, oldest first.
func (s *Service) ListAccessKeys() ([]*AccessKey, error) {
	var out []*AccessKey
	err := s.st.View(func(t store.Tx) (err error) {
		out, err = allRecords[AccessKey](t, recordAccessKey)
		return err
	})
	for _, k := range out {
		k.Secret = ""
	}
	slices.SortFunc(out, func(a, b *AccessKey) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, err
}

// SetAccessKeyStatus makes a key Active or Inactive (an inactive key signs nothing).
func (s *Service) SetAccessKeyStatus(id, status string) (*AccessKey, error) {
	if status != KeyActive && status != KeyInactive {
		return nil, Errorf(CodeInvalidRequest, "status %q: use Active or Inactive", status)
	}
	return s.updateAccessKey(id, func(k *AccessKey) error {
		k.Status = status
		return nil
	})
}

func (s *Service) updateAccessKey(id string, fn func(*AccessKey) error) (*AccessKey, error) {
	var out *AccessKey
	err := s.st.Update(func(t store.Tx) error {
		k, err := getRecord[AccessKey](t, recordAccessKey, id)
		if err != nil {
			return err
		}
		if k == nil {
			return Errorf(CodeResourceNotFound, "access key %s does not exist (`starter access list` shows them)", id)
		}
		if err := fn(k); err != nil {
			return err
		}
		out = k
		return putRecord(t, recordAccessKey, id, k)
	})
	s.keys.forget(id)
	if out != nil {
		out.Secret = ""
	}
	return out, err
}

// DeleteAccessKey deletes a key: from now on nothing it signs is accepted.
func (s *Service) DeleteAccessKey(id string) error {
	err := s.st.Update(func(t store.Tx) error {
		k, err := t.Record(recordAccessKey, id)
		if err != nil {
			return err
		}
		if k == nil {
			return Errorf(CodeResourceNotFound, "access key %s does not exist (`starter access list` shows them)", id)
		}
		return t.DeleteRecord(recordAccessKey, id)
	})
	s.keys.forget(id)
	return err
}

// RotateAccessKey issues a key with the same role, groups and description, and lets the old
// one sign for grace more (0: not at all), so clients can move over without a gap.
func (s *Service) RotateAccessKey(id string, grace time.Duration, by string) (*AccessKey, error) {
	if grace < 0 || grace > 30*24*time.Hour {
		return nil, Errorf(CodeInvalidRequest, "grace %s: between 0 and 30 days", grace)
	}
	nid, secret := newAccessKey()
	var fresh *AccessKey
	err := s.st.Update(func(t store.Tx) error {
		old, err := getRecord[AccessKey](t, recordAccessKey, id)
		if err != nil {
			return err
		}
		if old == nil {
			return Errorf(CodeResourceNotFound, "access key %s does not exist (`starter access list` shows them)", id)
		}
		if old.ReplacedBy != "" {
			return Errorf(CodeInvalidRequest, "access key %s was rotated already, to %s: rotate that one", id, old.ReplacedBy)
		}
		now := s.Clock()
		fresh = &AccessKey{ID: nid, Secret: secret, Role: old.Role, ThingGroups: old.ThingGroups, Description: old.Description,
			Status: KeyActive, CreatedAt: now, CreatedBy: by}
		old.ReplacedBy, old.ExpiresAt = nid, now.Add(grace)
		if err := putRecord(t, recordAccessKey, id, old); err != nil {
			return err
		}
		return putRecord(t, recordAccessKey, nid, fresh)
	})
	s.keys.forget(id)
	return fresh, err
}

// ErrKeyRefused is a key that exists but may not sign (inactive, or past its rotation).
type ErrKeyRefused struct{ Why string }

func (e ErrKeyRefused) Error() string { return e.Why }

// AccessKeySecret is a key's secret and who it makes a request come from, for SigV4: ok is
// false for a key that does not exist; a key that exists but may not sign is an ErrKeyRefused.
// Answers are kept for a few seconds (a key deleted on another replica stops signing there
// within keyCacheTTL; on this one at once).
func (s *Service) AccessKeySecret(id string) (secret string, p Principal, ok bool, err error) {
	k, err := s.keys.get(id, func() (*AccessKey, error) {
		var k *AccessKey
		err := s.st.View(func(t store.Tx) (err error) {
			k, err = getRecord[AccessKey](t, recordAccessKey, id)
			return err
		})
		return k, err
	})
	if err != nil || k == nil {
		return "", Principal{}, false, err
	}
	switch {
	case k.Status != KeyActive:
		return "", Principal{}, true, ErrKeyRefused{"this access key is inactive: an admin can activate it (`starter access activate`) or issue another"}
	case !k.ExpiresAt.IsZero() && !s.Clock().Before(k.ExpiresAt):
		return "", Principal{}, true, ErrKeyRefused{"this access key was rotated and its grace period is over: sign with the key that replaced it"}
	}
	return k.Secret, Principal{Name: k.ID, Role: k.Role, ThingGroups: k.ThingGroups}, true, nil
}

const keyCacheTTL = 5 * time.Second

// keyCache keeps recent key lookups (a rollout's worker signs many requests a second).
type keyCache struct {
	mu sync.Mutex
	m  map[string]cachedKey
}

type cachedKey struct {
	k  *AccessKey
	at time.Time
}

func (c *keyCache) get(id string, load func() (*AccessKey, error)) (*AccessKey, error) {
	c.mu.Lock()
	e, ok := c.m[id]
	c.mu.Unlock()
	if ok && time.Since(e.at) < keyCacheTTL {
		return e.k, nil
	}
	k, err := load()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) > 4*MaxAccessKeys {
		c.m = map[string]cachedKey{} // unknown IDs are cached too: bound them
	}
	c.m[id] = cachedKey{k, time.Now()}
	c.mu.Unlock()
	return k, nil
}

func (c *keyCache) forget(id string) {
	c.mu.Lock()
	delete(c.m, id)
	c.mu.Unlock()
}

// InScope reports whether a principal limited to thing groups may change a thing (when
// thing is set) or a group (when group is set): the thing must belong to, or the group be,
// one of its groups or a group below one. An unlimited principal may change anything.
func (s *Service) InScope(p Principal, thing, group string) (bool, error) {
	if len(p.ThingGroups) == 0 {
		return true, nil
	}
	in := false
	err := s.st.View(func(t store.Tx) error {
		groups := []string{group}
		if thing != "" {
			var err error
			if groups, err = t.ThingGroups(thing); err != nil {
				return err
			}
		}
		for _, g := range groups {
			up, err := ancestors(t, g)
			if err != nil {
				return err
			}
			if slices.ContainsFunc(up, func(a string) bool { return slices.Contains(p.ThingGroups, a) }) {
				in = true
				return nil
			}
		}
		return nil
	})
	return in, err
}

// TargetsInScope refuses, with ScopeError, a change by a principal limited to thing groups
// unless every target (a thing or thing-group ARN, or a thing name) is in its groups.
func (s *Service) TargetsInScope(p Principal, targets []string) error {
	if len(p.ThingGroups) == 0 {
		return nil
	}
	if len(targets) == 0 {
		return Errorf(CodeAccessDenied, "this change names no thing or thing group, and %s may change only the things of %s: use a key or user that is not limited to groups", p.Name, strings.Join(p.ThingGroups, ", "))
	}
	for _, t := range targets {
		tg, err := arn.ParseTarget(t)
		if err != nil {
			return Errorf(CodeInvalidRequest, "%s", err)
		}
		thing, group, what := tg.Name, "", "thing "+tg.Name
		if tg.Type == arn.TypeThingGroup {
			thing, group, what = "", tg.Name, "thing group "+tg.Name
		}
		ok, err := s.InScope(p, thing, group)
		if err != nil {
			return err
		}
		if !ok {
			return ScopeError(p, what)
		}
	}
	return nil
}

// ScopeError is a refusal of a change outside a principal's groups.
func ScopeError(p Principal, what string) error {
	return Errorf(CodeAccessDenied, "%s is outside the thing groups %s may change (%s): ask an admin for a key that covers it", what, p.Name, strings.Join(p.ThingGroups, ", "))
}

// CodeAccessDenied is AWS's AccessDeniedException: the caller is known, the request is not
// its to make.
const CodeAccessDenied ErrorCode = "AccessDenied"

// Denied is a request outside the principal's role.
func Denied(p Principal, action string, perm Permission) error {
	return Errorf(CodeAccessDenied, "%s (role %s) may not %s: it needs the %s role; ask an admin (`starter access create --role ...`)", p.Name, p.Role, action, perm.Needs())
}
