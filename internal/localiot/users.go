package localiot

import (
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode"

	"golang.org/x/crypto/bcrypt"

	"github.com/otaflow/otaflow/internal/localiot/store"
)

// Console users: a name, a password kept only as a bcrypt hash, and a role (and optionally
// thing groups), as access keys have. They live in the jobs store, so every replica's console
// signs the same users in.

const recordUser = "user"

// User is one console user.
type User struct {
	Name         string    `json:"userName"`
	PasswordHash []byte    `json:"passwordHash,omitempty"`
	Role         Role      `json:"role"`
	ThingGroups  []string  `json:"thingGroups,omitempty"`
	Disabled     bool      `json:"disabled,omitempty"`
	CreatedAt    time.Time `json:"createDate"`
	CreatedBy    string    `json:"createdBy,omitempty"`
	// PasswordChanged is when the password was last set.
	PasswordChanged time.Time `json:"passwordChanged"`
}

// bcryptCost is bcrypt's work factor: about 50 ms a check on this class of machine, which with
// the console's guessing limits makes a password's hash the slow part of any guess.
const bcryptCost = 11

var userNameRE = regexp.MustCompile(`^[a-zA-Z0-9._@+-]{1,64}$`)

// CheckPassword refuses a password that is easy to guess: at least 20 characters, or 12 with
// three kinds of character (lower case, upper case, digits, others). what names it in the error.
func CheckPassword(what, pw string) error {
	kinds := map[string]bool{}
	for _, r := range pw {
		switch {
		case unicode.IsLower(r):
			kinds["lower"] = true
		case unicode.IsUpper(r):
			kinds["upper"] = true
		case unicode.IsDigit(r):
			kinds["digit"] = true
		default:
			kinds["other"] = true
		}
	}
	n := len([]rune(pw))
	if n > 1024 {
		return fmt.Errorf("%s is longer than 1024 bytes", what)
	}
	if n >= 20 || (n >= 12 && len(kinds) >= 3) {
		if strings.Count(pw, string([]rune(pw)[0])) == n {
			return fmt.Errorf("%s repeats one character", what)
		}
		return nil
	}
	return fmt.Errorf("%s is too easy to guess: use at least 20 characters, or 12 with three kinds (lower case, upper case, digits, others); `openssl rand -hex 16` makes one", what)
}

// UserInput is a new user, or changes to one (empty fields are left as they are).
type UserInput struct {
	Name, Password string
	Role           Role
	ThingGroups    []string
	Disabled       *bool
	By             string
}

// CreateUser adds a console user.
func (s *Service) CreateUser(in UserInput) (*User, error) {
	if !userNameRE.MatchString(in.Name) {
		return nil, Errorf(CodeInvalidRequest, "user name %q: 1-64 letters, digits and . _ @ + -", in.Name)
	}
	if in.Name == "admin" {
		return nil, Errorf(CodeInvalidRequest, "user name admin is the console password's (--console-password): choose another")
	}
	if _, err := ParseRole(string(in.Role)); err != nil {
		return nil, err
	}
	hash, err := hashPassword(in.Name, in.Password)
	if err != nil {
		return nil, err
	}
	now := s.Clock()
	u := &User{Name: in.Name, PasswordHash: hash, Role: in.Role, ThingGroups: in.ThingGroups, CreatedAt: now, CreatedBy: in.By, PasswordChanged: now}
	err = s.st.Update(func(t store.Tx) error {
		if err := checkGroupsExist(t, in.ThingGroups); err != nil {
			return err
		}
		if old, err := t.Record(recordUser, in.Name); err != nil || old != nil {
			return cmpErr(err, Errorf(CodeAlreadyExists, "user %s exists: change it with `starter access user set`", in.Name))
		}
		all, err := t.Records(recordUser)
		if err != nil {
			return err
		}
		if len(all) >= MaxAccessKeys {
			return Errorf(CodeLimitExceeded, "there are %d users, the most this service keeps", len(all))
		}
		return putRecord(t, recordUser, in.Name, u)
	})
	u.PasswordHash = nil
	return u, err
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func hashPassword(name, pw string) ([]byte, error) {
	if err := CheckPassword("user "+name+"'s password", pw); err != nil {
		return nil, Errorf(CodeInvalidRequest, "%s", err)
	}
	if len(pw) > 72 {
		return nil, Errorf(CodeInvalidRequest, "user %s's password is longer than 72 bytes, the most bcrypt hashes", name)
	}
	return bcrypt.GenerateFromPassword([]byte(pw), bcryptCost)
}

// UpdateUser changes a user's password, role, groups or whether it is disabled.
func (s *Service) UpdateUser(in UserInput) (*User, error) {
	var hash []byte
	if in.Password != "" {
		var err error
		if hash, err = hashPassword(in.Name, in.Password); err != nil {
			return nil, err
		}
	}
	if in.Role != "" {
		if _, err := ParseRole(string(in.Role)); err != nil {
			return nil, err
		}
	}
	var out *User
	err := s.st.Update(func(t store.Tx) error {
		u, err := getRecord[User](t, recordUser, in.Name)
		if err != nil {
			return err
		}
		if u == nil {
			return Errorf(CodeResourceNotFound, "user %s does not exist (`starter access user list` shows them)", in.Name)
		}
		if hash != nil {
			u.PasswordHash, u.PasswordChanged = hash, s.Clock()
		}
		if in.Role != "" {
			u.Role = in.Role
		}
		if in.ThingGroups != nil {
			if err := checkGroupsExist(t, in.ThingGroups); err != nil {
				return err
			}
			u.ThingGroups = in.ThingGroups
		}
		if in.Disabled != nil {
			u.Disabled = *in.Disabled
		}
		out = u
		return putRecord(t, recordUser, in.Name, u)
	})
	if out != nil {
		out.PasswordHash = nil
	}
	return out, err
}

// ListUsers is every user, by name, without password hashes.
func (s *Service) ListUsers() ([]*User, error) {
	var out []*User
	err := s.st.View(func(t store.Tx) (err error) {
		out, err = allRecords[User](t, recordUser)
		return err
	})
	for _, u := range out {
		u.PasswordHash = nil
	}
	return out, err
}

// DeleteUser removes a user (its console sessions end at their next request).
func (s *Service) DeleteUser(name string) error {
	return s.st.Update(func(t store.Tx) error {
		if u, err := t.Record(recordUser, name); err != nil || u == nil {
			return cmpErr(err, Errorf(CodeResourceNotFound, "user %s does not exist", name))
		}
		return t.DeleteRecord(recordUser, name)
	})
}

// ErrSignIn is a failed sign-in: it never says whether the user or the password was wrong.
var ErrSignIn = Errorf(CodeUnauthorized, "wrong user name or password")

// dummyHash is checked against for unknown users, so that a guess takes as long either way.
// It is made at the first sign-in, not at package init: every process that links this package
// (every starter command, `starter download` in the benchmark) paid its 0.1 s of CPU at start.
var dummyHash = sync.OnceValue(func() []byte {
	h, err := bcrypt.GenerateFromPassword([]byte("otaflow: no such user"), bcryptCost)
	if err != nil {
		panic("bcrypt: " + err.Error()) // only for a password over 72 bytes or a bad cost
	}
	return h
})

// Authenticate is the user a name and password sign in, or ErrSignIn.
func (s *Service) Authenticate(name, password string) (Principal, error) {
	u, err := s.user(name)
	if err != nil {
		return Principal{}, err
	}
	hash := dummyHash()
	if u != nil {
		hash = u.PasswordHash
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(password)) != nil || u == nil {
		return Principal{}, ErrSignIn
	}
	if u.Disabled {
		return Principal{}, Errorf(CodeUnauthorized, "user %s is disabled: an admin can enable it (`starter access user set %s --enable`)", name, name)
	}
	return Principal{Name: u.Name, Role: u.Role, ThingGroups: u.ThingGroups, PasswordSet: u.PasswordChanged}, nil
}

// UserPrincipal is who a signed-in user is now (a session checks it on every request, so a
// deleted or disabled user, or a changed role, takes effect at once); ok is false when the user
// may no longer sign in, or its password changed since the session's sign-in (p.PasswordSet).
func (s *Service) UserPrincipal(p Principal) (Principal, bool, error) {
	u, err := s.user(p.Name)
	if err != nil || u == nil || u.Disabled || !u.PasswordChanged.Equal(p.PasswordSet) {
		return Principal{}, false, err
	}
	return Principal{Name: u.Name, Role: u.Role, ThingGroups: u.ThingGroups, PasswordSet: u.PasswordChanged}, true, nil
}

func (s *Service) user(name string) (*User, error) {
	var u *User
	err := s.st.View(func(t store.Tx) (err error) {
		u, err = getRecord[User](t, recordUser, name)
		return err
	})
	return u, err
}

// HasUsers reports whether any console user exists.
func (s *Service) HasUsers() (bool, error) {
	var n int
	err := s.st.View(func(t store.Tx) error {
		names, _, err := t.RecordsPage(recordUser, "", 1, false)
		n = len(names)
		return err
	})
	return n > 0, err
}
