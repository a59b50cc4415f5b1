package localiot

import (
	"fmt"
	"maps"
	"regexp"
	"strings"

	"github.com/otaflow/otaflow/internal/localiot/store"
)

// Things: registration, lookup, deletion and listing (AWS IoT CreateThing, DescribeThing,
// DeleteThing, ListThings).

var (
	thingNameRE = regexp.MustCompile(`^[a-zA-Z0-9:_-]{1,128}$`)
	jobIDRE     = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)
)

// CreateThing registers a thing. Creating an existing thing with the same attributes is a
// no-op, as in AWS; different attributes are a conflict.
func (s *Service) CreateThing(name string, attrs map[string]string) (*store.Thing, error) {
	return s.CreateTypedThing(name, "", attrs)
}

// CreateTypedThing is CreateThing with a thing type (which must exist and not be deprecated).
func (s *Service) CreateTypedThing(name, typeName string, attrs map[string]string) (*store.Thing, error) {
	var out *store.Thing
	// Batch: fleets are registered by scripts and provisioning services that create many
	// things at once; they share commits (fn may run again, and sets out each time).
	err := s.st.Batch(func(t store.Tx) (err error) {
		out, err = s.createThingTx(t, name, typeName, attrs)
		return err
	})
	return out, err
}

// createThingTx creates a thing within t, or finds the same one there.
func (s *Service) createThingTx(t store.Tx, name, typeName string, attrs map[string]string) (*store.Thing, error) {
	if !thingNameRE.MatchString(name) {
		return nil, Errorf(CodeInvalidRequest, "thing name %q is invalid: use 1-128 characters from a-z A-Z 0-9 : _ -", name)
	}
	existing, err := t.Thing(name)
	if err != nil {
		return nil, err
	}
	if existing != nil {
		if !mapsEqual(existing.Attributes, attrs) || existing.TypeName != typeName {
			return nil, Errorf(CodeAlreadyExists, "thing %s already exists with different attributes or type", name)
		}
		return existing, nil
	}
	if typeName != "" {
		if err := usableThingType(t, typeName); err != nil {
			return nil, err
		}
	}
	seq, err := t.NextID("thing")
	if err != nil {
		return nil, err
	}
	th := &store.Thing{Name: name, Arn: s.ThingArn(name), ID: fmt.Sprintf("%016x", seq), Attributes: attrs, TypeName: typeName, Version: 1, CreatedAt: s.Clock()}
	return th, t.PutThing(th)
}

// DescribeThing returns a registered thing.
func (s *Service) DescribeThing(name string) (*store.Thing, error) {
	return viewOne(s, func(t store.Tx) (*store.Thing, error) { return t.Thing(name) },
		Errorf(CodeResourceNotFound, "thing %s does not exist; register it first (CreateThing)", name))
}

// DeleteThing deletes a thing; its pending executions become REMOVED.
func (s *Service) DeleteThing(name string, expectedVersion int64) error {
	err := s.st.Update(func(t store.Tx) error {
		th, err := t.Thing(name)
		if err != nil {
			return err
		}
		if th == nil {
			return nil // deleting a thing that does not exist succeeds, as in AWS
		}
		if expectedVersion != 0 && expectedVersion != th.Version {
			return Errorf(CodeVersionMismatch, "thing %s is at version %d, not %d", name, th.Version, expectedVersion)
		}
		if len(th.Principals) > 0 {
			return Errorf(CodeInvalidRequest, "cannot delete thing %s: it has %d principal(s) attached; detach them first (DetachThingPrincipal)", name, len(th.Principals))
		}
		execs, err := t.ThingExecutions(name)
		if err != nil {
			return err
		}
		now := s.Clock()
		for _, e := range execs {
			if e.Status.Terminal() {
				continue
			}
			j, err := t.Job(e.JobID)
			if err != nil {
				return err
			}
			if err := s.setStatus(t, j, e, store.ExecRemoved, nil, now); err != nil {
				return err
			}
		}
		if err := deleteShadows(t, th); err != nil {
			return err
		}
		if err := t.DeleteRecord(presenceKind, name); err != nil {
			return err
		}
		return t.DeleteThing(name)
	})
	return err
}

// ListThings pages through things in name order, optionally those with an attribute value.
func (s *Service) ListThings(attrName, attrValue string, prefix bool, typeName string, max int, token string) ([]*store.Thing, string, error) {
	var names []string
	byName := map[string]*store.Thing{}
	err := s.st.View(func(t store.Tx) error {
		return t.ForEachThing(func(th *store.Thing) error {
			if typeName != "" && th.TypeName != typeName {
				return nil
			}
			if attrName != "" {
				v, ok := th.Attributes[attrName]
				if !ok || (prefix && !strings.HasPrefix(v, attrValue)) || (!prefix && attrValue != "" && v != attrValue) {
					return nil
				}
			}
			names = append(names, th.Name)
			byName[th.Name] = th
			return nil
		})
	})
	if err != nil {
		return nil, "", err
	}
	page, next := PageStrings(names, max, token)
	out := make([]*store.Thing, 0, len(page))
	for _, n := range page {
		out = append(out, byName[n])
	}
	return out, next, nil
}

// UpdateThing changes a thing's attributes (AWS's attributePayload: with merge, the given
// attributes are added or replaced and an empty value removes one; without, they replace all).
func (s *Service) UpdateThing(name string, attrs map[string]string, merge bool, expectedVersion int64, typeChange ...string) error {
	return s.st.Update(func(t store.Tx) error {
		th, err := t.Thing(name)
		if err != nil {
			return err
		}
		if th == nil {
			return Errorf(CodeResourceNotFound, "thing %s does not exist; register it first (CreateThing)", name)
		}
		if expectedVersion != 0 && expectedVersion != th.Version {
			return Errorf(CodeConflict, "thing %s is at version %d, not the expected %d", name, th.Version, expectedVersion)
		}
		next := mergeAttributes(th.Attributes, attrs, merge)
		if err := CheckAttributes(next); err != nil {
			return err
		}
		if len(typeChange) > 0 { // a new type, or "" to remove it
			if typeChange[0] != "" {
				if err := usableThingType(t, typeChange[0]); err != nil {
					return err
				}
			}
			th.TypeName = typeChange[0]
		}
		th.Attributes = next
		th.Version++
		return t.PutThing(th)
	})
}

// mergeAttributes applies an attributePayload: with merge, attrs are added to or replace the
// current ones; without, they replace them all. An empty value removes an attribute.
func mergeAttributes(current, attrs map[string]string, merge bool) map[string]string {
	next := map[string]string{}
	if merge {
		maps.Copy(next, current)
	}
	for k, v := range attrs {
		if v == "" {
			delete(next, k)
			continue
		}
		next[k] = v
	}
	return next
}

// AWS's limits on thing attributes: at most 50 (for a thing without a type: 3 searchable, but
// every attribute is searchable here), names to 128 and values to 800 of [a-zA-Z0-9_.,@/:#=\[\]-].
func CheckAttributes(attrs map[string]string) error {
	if len(attrs) > 50 {
		return Errorf(CodeInvalidRequest, "a thing has at most 50 attributes, not %d", len(attrs))
	}
	for k, v := range attrs {
		if len(k) == 0 || len(k) > 128 || !attrCharsOK(k) {
			return Errorf(CodeInvalidRequest, "attribute name %q: use 1 to 128 of a-z A-Z 0-9 _ . , @ / : # - [ ] =", k)
		}
		if len(v) > 800 || !attrCharsOK(v) {
			return Errorf(CodeInvalidRequest, "attribute %s's value: at most 800 of a-z A-Z 0-9 _ . , @ / : # - [ ] =", k)
		}
	}
	return nil
}

func attrCharsOK(s string) bool {
	for _, c := range s {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.ContainsRune("_.,@/:#-[]=", c)) {
			return false
		}
	}
	return true
}
