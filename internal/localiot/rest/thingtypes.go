package rest

import (
	"net/http"

	"github.com/otaflow/otaflow/internal/localiot"
)

func thingTypeJSON(tt *localiot.ThingType) map[string]any {
	props := map[string]any{}
	if tt.Description != "" {
		props["thingTypeDescription"] = tt.Description
	}
	if len(tt.SearchableAttributes) > 0 {
		props["searchableAttributes"] = tt.SearchableAttributes
	}
	meta := map[string]any{"deprecated": tt.Deprecated, "creationDate": ptime(tt.CreatedAt)}
	if tt.Deprecated {
		meta["deprecationDate"] = ptime(tt.DeprecatedAt)
	}
	return map[string]any{"thingTypeName": tt.Name, "thingTypeArn": tt.Arn, "thingTypeProperties": props, "thingTypeMetadata": meta}
}

func (s api) handleCreateThingType(r *http.Request) (any, error) {
	var in localiot.ThingTypeProps
	if err := readJSON(r, &in); err != nil {
		return nil, err
	}
	var desc string
	var searchable []string
	if p := in.ThingTypeProperties; p != nil {
		desc, searchable = p.Description, p.SearchableAttributes
	}
	tt, err := s.CreateThingType(r.PathValue("thingTypeName"), desc, searchable)
	if err != nil {
		return nil, err
	}
	return map[string]string{"thingTypeName": tt.Name, "thingTypeArn": tt.Arn, "thingTypeId": tt.ID}, nil
}

func (s api) handleDescribeThingType(r *http.Request) (any, error) {
	tt, err := s.DescribeThingType(r.PathValue("thingTypeName"))
	if err != nil {
		return nil, err
	}
	out := thingTypeJSON(tt)
	out["thingTypeId"] = tt.ID
	return out, nil
}

func (s api) handleListThingTypes(r *http.Request) (any, error) {
	max, err := maxResults(r)
	if err != nil {
		return nil, err
	}
	if err := onlyQuery(r, "nextToken", "maxResults", "thingTypeName"); err != nil {
		return nil, err
	}
	all, err := s.ListThingTypes(r.URL.Query().Get("thingTypeName"))
	if err != nil {
		return nil, err
	}
	names := make([]string, len(all))
	byName := map[string]*localiot.ThingType{}
	for i, tt := range all {
		names[i], byName[tt.Name] = tt.Name, tt
	}
	names, next := localiot.PageStrings(names, max, r.URL.Query().Get("nextToken"))
	list := make([]map[string]any, 0, len(names))
	for _, n := range names {
		list = append(list, thingTypeJSON(byName[n]))
	}
	return page(map[string]any{"thingTypes": list}, next), nil
}

func (s api) handleDeprecateThingType(r *http.Request) (any, error) {
	var in struct {
		UndoDeprecate bool `json:"undoDeprecate"`
	}
	if err := readJSON(r, &in); err != nil {
		return nil, err
	}
	if err := s.DeprecateThingType(r.PathValue("thingTypeName"), in.UndoDeprecate); err != nil {
		return nil, err
	}
	return map[string]any{}, nil
}

func (s api) handleDeleteThingType(r *http.Request) (any, error) {
	if err := s.DeleteThingType(r.PathValue("thingTypeName")); err != nil {
		return nil, err
	}
	return map[string]any{}, nil
}
