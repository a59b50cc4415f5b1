package rest

import (
	"net/http"
	"strconv"

	"github.com/otaflow/otaflow/internal/localiot"
)

// Dynamic thing groups (localiot/dynamicgroups.go).

type dynamicGroupQuery struct {
	IndexName    string `json:"indexName"`
	QueryString  string `json:"queryString"`
	QueryVersion string `json:"queryVersion"`
}

func (s api) handleCreateDynamicThingGroup(r *http.Request) (any, error) {
	var in struct {
		dynamicGroupQuery
		ThingGroupProperties *thingGroupPropsJSON `json:"thingGroupProperties"`
		Tags                 []map[string]any     `json:"tags"`
	}
	if err := readJSON(r, &in); err != nil {
		return nil, err
	}
	if in.QueryString == "" {
		return nil, localiot.Errorf(localiot.CodeInvalidRequest, "queryString is required")
	}
	var props localiot.GroupProperties
	if p := in.ThingGroupProperties; p != nil {
		props = localiot.GroupProperties{Description: p.Description, Attributes: p.attributes()}
	}
	g, err := s.CreateDynamicThingGroup(r.PathValue("thingGroupName"), props, in.IndexName, in.QueryString, in.QueryVersion)
	if err != nil {
		return nil, err
	}
	return &struct {
		createThingGroupResponse
		dynamicGroupQuery
	}{createThingGroupResponse{ThingGroupName: g.Name, ThingGroupArn: g.Arn, ThingGroupID: g.ID},
		dynamicGroupQuery{g.Dynamic.IndexName, g.Dynamic.QueryString, g.Dynamic.QueryVersion}}, nil
}

func (s api) handleUpdateDynamicThingGroup(r *http.Request) (any, error) {
	in, err := readGroupUpdate(r)
	if err != nil {
		return nil, err
	}
	p := in.ThingGroupProperties
	v, err := s.UpdateDynamicThingGroup(r.PathValue("thingGroupName"), localiot.GroupProperties{Description: p.Description, Attributes: p.attributes()},
		p.merge(), in.ExpectedVersion, in.IndexName, in.QueryString, in.QueryVersion)
	if err != nil {
		return nil, err
	}
	return &versionResponse{Version: v}, nil
}

func (s api) handleDeleteDynamicThingGroup(r *http.Request) (any, error) {
	var expected int64
	if v := r.URL.Query().Get("expectedVersion"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, localiot.Errorf(localiot.CodeInvalidRequest, "expectedVersion %q is not a number", v)
		}
		expected = n
	}
	return empty{}, s.DeleteDynamicThingGroup(r.PathValue("thingGroupName"), expected)
}
