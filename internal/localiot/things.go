package localiot

import (
	"fmt"
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
	if !thingNameRE.MatchString(name) {
		return nil, errorf(CodeInvalidRequest, "thing name %q is invalid: use 1-128 characters from a-z A-Z 0-9 : _ -", name)
	}
	var out *store.Thing
	// Batch: fleets are registered by scripts and provisioning services that create many
	// things at once; they share commits (fn may run again, and sets out each time).
	err := s.st.Batch(func(t store.Tx) error {
		existing, err := t.Thing(name)
		if err != nil {
			return err
		}
		if existing != nil {
			if !mapsEqual(existing.Attributes, attrs) || existing.TypeName != typeName {
				return errorf(CodeAlreadyExists, "thing %s already exists with different attributes or type", name)
			}
			out = existing
			return nil
		}
		if typeName != "" {
			if err := usableThingType(t, typeName); err != nil {
				return err
			}
		}
		seq, err := t.NextID("thing")
		if err != nil {
			return err
		}
		out = &store.Thing{Name: name, Arn: s.ThingArn(name), ID: fmt.Sprintf("%016x", seq), Attributes: attrs, TypeName: typeName, Version: 1, CreatedAt: s.clock()}
		return t.PutThing(out)
	})
	return out, err
}

// DescribeThing returns a registered thing.
func (s *Service) DescribeThing(name string) (*store.Thing, error) {
	return viewOne(s, func(t store.Tx) (*store.Thing, error) { return t.Thing(name) },
		errorf(CodeResourceNotFound, "thing %s does not exist; register it first (CreateThing)", name))
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
			return errorf(CodeVersionMismatch, "thing %s is at version %d, not %d", name, th.Version, expectedVersion)
		}
		execs, err := t.ThingExecutions(name)
		if err != nil {
			return err
		}
		now := s.clock()
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
	page, next := pageStrings(names, max, token)
	out := make([]*store.Thing, 0, len(page))
	for _, n := range page {
		out = append(out, byName[n])
	}
	return out, next, nil
}
