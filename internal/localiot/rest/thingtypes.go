package rest

import (
	"net/http"

	"github.com/otaflow/otaflow/internal/localiot"
)

// thingTypeJSON is AWS's ThingTypeDefinition, and DescribeThingType's answer with its ID.
type thingTypeJSON struct {
	ThingTypeName string `json:"thingTypeName"`
	ThingTypeArn  string `json:"thingTypeArn"`
	ThingTypeID   string `json:"thingTypeId,omitempty"`
	Properties    struct {
		Description          string   `json:"thingTypeDescription,omitempty"`
		SearchableAttributes []string `json:"searchableAttributes,omitempty"`
	} `json:"thingTypeProperties"`
	Metadata struct {
		Deprecated      bool     `json:"deprecated"`
		CreationDate    *awsTime `json:"creationDate"`
		DeprecationDate *awsTime `json:"deprecationDate,omitempty"`
	} `json:"thingTypeMetadata"`
}

func thingType(tt *localiot.ThingType) thingTypeJSON {
	out := thingTypeJSON{ThingTypeName: tt.Name, ThingTypeArn: tt.Arn}
	out.Properties.Description, out.Properties.SearchableAttributes = tt.Description, tt.SearchableAttributes
	out.Metadata.Deprecated, out.Metadata.CreationDate = tt.Deprecated, ptime(tt.CreatedAt)
	if tt.Deprecated {
		out.Metadata.DeprecationDate = ptime(tt.DeprecatedAt)
	}
	return out
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
	return &createThingTypeResponse{ThingTypeName: tt.Name, ThingTypeArn: tt.Arn, ThingTypeID: tt.ID}, nil
}

func (s api) handleDescribeThingType(r *http.Request) (any, error) {
	tt, err := s.DescribeThingType(r.PathValue("thingTypeName"))
	if err != nil {
		return nil, err
	}
	out := thingType(tt)
	out.ThingTypeID = tt.ID
	return &out, nil
}

type createThingTypeResponse struct {
	ThingTypeName string `json:"thingTypeName"`
	ThingTypeArn  string `json:"thingTypeArn"`
	ThingTypeID   string `json:"thingTypeId"`
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
	out := &listThingTypesResponse{ThingTypes: make([]thingTypeJSON, 0, len(names)), paged: paged{next}}
	for _, n := range names {
		out.ThingTypes = append(out.ThingTypes, thingType(byName[n]))
	}
	return out, nil
}

type listThingTypesResponse struct {
	ThingTypes []thingTypeJSON `json:"thingTypes"`
	paged
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
	return empty{}, nil
}

func (s api) handleDeleteThingType(r *http.Request) (any, error) {
	if err := s.DeleteThingType(r.PathValue("thingTypeName")); err != nil {
		return nil, err
	}
	return empty{}, nil
}
