package localiot

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/otaflow/otaflow/internal/localiot/store"
)

// Thing types (CreateThingType, DescribeThingType, ListThingTypes, DeprecateThingType,
// DeleteThingType), and a thing's type (CreateThing, UpdateThing, DescribeThing, ListThings'
// thingTypeName filter): what lets a script pick rollout targets by type.

const recordThingType = "thing-type"

// ThingType is one thing type.
type ThingType struct {
	Name                 string    `json:"thingTypeName"`
	Arn                  string    `json:"thingTypeArn"`
	ID                   string    `json:"thingTypeId"`
	Description          string    `json:"thingTypeDescription,omitempty"`
	SearchableAttributes []string  `json:"searchableAttributes,omitempty"`
	CreatedAt            time.Time `json:"creationDate"`
	Deprecated           bool      `json:"deprecated"`
	DeprecatedAt         time.Time `json:"deprecationDate,omitzero"`
}

func getRecord[T any](t store.Tx, kind, name string) (*T, error) {
	raw, err := t.Record(kind, name)
	if err != nil || raw == nil {
		return nil, err
	}
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("corrupt %s record %s: %w", kind, name, err)
	}
	return &v, nil
}

// allRecords decodes every record of a kind.
func allRecords[T any](t store.Tx, kind string) ([]*T, error) {
	raws, err := t.Records(kind)
	if err != nil {
		return nil, err
	}
	out := make([]*T, 0, len(raws))
	for _, raw := range raws {
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("corrupt %s record: %w", kind, err)
		}
		out = append(out, &v)
	}
	return out, nil
}

func putRecord(t store.Tx, kind, name string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return t.PutRecord(kind, name, raw)
}

// CreateThingType creates a thing type; creating an existing one with the same properties is
// a no-op, as on AWS.
func (s *Service) CreateThingType(name, description string, searchable []string) (*ThingType, error) {
	if !thingNameRE.MatchString(name) {
		return nil, Errorf(CodeInvalidRequest, "thing type name %q is invalid: use 1-128 characters from a-z A-Z 0-9 : _ -", name)
	}
	if len(description) > 2028 {
		return nil, Errorf(CodeInvalidRequest, "thingTypeDescription: at most 2028 characters")
	}
	if len(searchable) > 3 {
		return nil, Errorf(CodeInvalidRequest, "a thing type has at most 3 searchable attributes")
	}
	var out *ThingType
	err := s.st.Update(func(t store.Tx) error {
		existing, err := getRecord[ThingType](t, recordThingType, name)
		if err != nil {
			return err
		}
		if existing != nil {
			if existing.Description != description || !slices.Equal(existing.SearchableAttributes, searchable) {
				return Errorf(CodeAlreadyExists, "thing type %s already exists with other properties", name)
			}
			out = existing
			return nil
		}
		seq, err := t.NextID("record")
		if err != nil {
			return err
		}
		out = &ThingType{Name: name, Arn: fmt.Sprintf("arn:aws:iot:%s:%s:thingtype/%s", s.region, s.account, name), ID: fmt.Sprintf("tt%014x", seq),
			Description: description, SearchableAttributes: searchable, CreatedAt: s.Clock()}
		return putRecord(t, recordThingType, name, out)
	})
	return out, err
}

// DescribeThingType returns a thing type.
func (s *Service) DescribeThingType(name string) (*ThingType, error) {
	var out *ThingType
	err := s.st.View(func(t store.Tx) (err error) {
		out, err = getRecord[ThingType](t, recordThingType, name)
		return err
	})
	if err == nil && out == nil {
		err = Errorf(CodeResourceNotFound, "thing type %s does not exist", name)
	}
	return out, err
}

// ListThingTypes lists thing types by name (only name, when given).
func (s *Service) ListThingTypes(name string) ([]*ThingType, error) {
	var out []*ThingType
	err := s.st.View(func(t store.Tx) error {
		all, err := t.Records(recordThingType)
		if err != nil {
			return err
		}
		for _, raw := range all {
			var tt ThingType
			if err := json.Unmarshal(raw, &tt); err != nil {
				return err
			}
			if name == "" || tt.Name == name {
				out = append(out, &tt)
			}
		}
		return nil
	})
	return out, err
}

// DeprecateThingType deprecates a thing type (no new thing may take it) or undoes that.
func (s *Service) DeprecateThingType(name string, undo bool) error {
	return s.st.Update(func(t store.Tx) error {
		tt, err := mustThingType(t, name)
		if err != nil {
			return err
		}
		tt.Deprecated = !undo
		tt.DeprecatedAt = time.Time{}
		if !undo {
			tt.DeprecatedAt = s.Clock()
		}
		return putRecord(t, recordThingType, name, tt)
	})
}

// DeleteThingType deletes a deprecated thing type that no thing has any more (AWS also waits
// five minutes after the deprecation; this service does not).
func (s *Service) DeleteThingType(name string) error {
	return s.st.Update(func(t store.Tx) error {
		tt, err := mustThingType(t, name)
		if err != nil {
			return err
		}
		if !tt.Deprecated {
			return Errorf(CodeInvalidRequest, "thing type %s is not deprecated: deprecate it first (DeprecateThingType)", name)
		}
		// AWS IoT deletes a thing type only five minutes after it was deprecated.
		if ready := tt.DeprecatedAt.Add(5 * time.Minute); s.quotas && s.Clock().Before(ready) {
			return Errorf(CodeInvalidRequest, "thing type %s was deprecated at %s; AWS IoT deletes a type five minutes after its deprecation: try again after %s",
				name, tt.DeprecatedAt.Format(time.RFC3339), ready.Format(time.RFC3339))
		}
		var users []string
		if err := t.ForEachThing(func(th *store.Thing) error {
			if th.TypeName == name && len(users) < 5 {
				users = append(users, th.Name)
			}
			return nil
		}); err != nil {
			return err
		}
		if len(users) > 0 {
			return Errorf(CodeInvalidRequest, "thing type %s is still the type of %s: change or remove their type first", name, strings.Join(users, ", "))
		}
		return t.DeleteRecord(recordThingType, name)
	})
}

// mustThingType is a thing type, with a missing one an error.
func mustThingType(t store.Tx, name string) (*ThingType, error) {
	tt, err := getRecord[ThingType](t, recordThingType, name)
	if err == nil && tt == nil {
		err = Errorf(CodeResourceNotFound, "thing type %s does not exist; create it first (CreateThingType)", name)
	}
	return tt, err
}

// usableThingType checks that a thing may take the type: it exists and is not deprecated.
func usableThingType(t store.Tx, name string) error {
	tt, err := mustThingType(t, name)
	if err != nil {
		return err
	}
	if tt.Deprecated {
		return Errorf(CodeInvalidRequest, "thing type %s is deprecated: no thing may take it", name)
	}
	return nil
}

type ThingTypeProps struct {
	ThingTypeProperties *struct {
		Description          string   `json:"thingTypeDescription"`
		SearchableAttributes []string `json:"searchableAttributes"`
	} `json:"thingTypeProperties"`
}
