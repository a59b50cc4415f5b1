package rest

import (
	"net/http"
	"slices"

	"github.com/otaflow/otaflow/internal/arn"
	"github.com/otaflow/otaflow/internal/localiot"
)

func (s api) handleCreateThingGroup(r *http.Request) (any, error) {
	var in struct {
		ParentGroupName      string               `json:"parentGroupName"`
		ThingGroupProperties *thingGroupPropsJSON `json:"thingGroupProperties"`
	}
	if err := readJSON(r, &in); err != nil {
		return nil, err
	}
	var props localiot.GroupProperties
	if p := in.ThingGroupProperties; p != nil {
		props = localiot.GroupProperties{Description: p.Description, Attributes: p.attributes()}
	}
	g, err := s.CreateThingGroup(r.PathValue("thingGroupName"), in.ParentGroupName, props)
	if err != nil {
		return nil, err
	}
	return &createThingGroupResponse{ThingGroupName: g.Name, ThingGroupArn: g.Arn, ThingGroupID: g.ID}, nil
}

type createThingGroupResponse struct {
	ThingGroupName string `json:"thingGroupName"`
	ThingGroupArn  string `json:"thingGroupArn"`
	ThingGroupID   string `json:"thingGroupId"`
}

func (s api) handleDescribeThingGroup(r *http.Request) (any, error) {
	g, err := s.DescribeThingGroup(r.PathValue("thingGroupName"))
	if err != nil {
		return nil, err
	}
	out := &describeThingGroupResponse{ThingGroupName: g.Name, ThingGroupArn: g.Arn, ThingGroupID: g.ID, Version: g.Version}
	out.Metadata.CreationDate = ptime(g.CreatedAt)
	if g.Parent != "" {
		out.Metadata.ParentGroupName = g.Parent
		anc, err := s.GroupAncestors(g.Name)
		if err != nil {
			return nil, err
		}
		// From the root down to the parent, as AWS lists them.
		for i := len(anc) - 1; i >= 1; i-- {
			out.Metadata.RootToParent = append(out.Metadata.RootToParent, s.groupNameAndArn(anc[i]))
		}
	}
	if d := g.Dynamic; d != nil {
		out.IndexName, out.QueryString, out.QueryVersion, out.Status = d.IndexName, d.QueryString, d.QueryVersion, "ACTIVE"
	}
	out.Properties.Description = g.Description
	if len(g.Attributes) > 0 {
		out.Properties.AttributePayload = &attributePayload{Attributes: g.Attributes}
	}
	return out, nil
}

type describeThingGroupResponse struct {
	ThingGroupName string `json:"thingGroupName"`
	ThingGroupArn  string `json:"thingGroupArn"`
	ThingGroupID   string `json:"thingGroupId"`
	Version        int64  `json:"version"`
	Metadata       struct {
		CreationDate    *awsTime `json:"creationDate"`
		ParentGroupName string   `json:"parentGroupName,omitempty"`
		// RootToParent is set (possibly empty) for a group with a parent.
		RootToParent []groupNameAndArn `json:"rootToParentThingGroups,omitempty"`
	} `json:"thingGroupMetadata"`
	Properties struct {
		Description      string            `json:"thingGroupDescription,omitempty"`
		AttributePayload *attributePayload `json:"attributePayload,omitempty"`
	} `json:"thingGroupProperties"`
	// A dynamic group's query, and its status (ACTIVE: its membership is kept as things change).
	IndexName    string `json:"indexName,omitempty"`
	QueryString  string `json:"queryString,omitempty"`
	QueryVersion string `json:"queryVersion,omitempty"`
	Status       string `json:"status,omitempty"`
}

type attributePayload struct {
	Attributes map[string]string `json:"attributes"`
}

// groupNameAndArn is AWS's GroupNameAndArn.
type groupNameAndArn struct {
	GroupName string `json:"groupName"`
	GroupArn  string `json:"groupArn"`
}

func (s api) groupNameAndArn(name string) groupNameAndArn {
	return groupNameAndArn{GroupName: name, GroupArn: s.ThingGroupArn(name)}
}

func (s api) handleDeleteThingGroup(r *http.Request) (any, error) {
	if err := s.DeleteThingGroup(r.PathValue("thingGroupName")); err != nil {
		return nil, err
	}
	return empty{}, nil
}

func (s api) handleThingGroupMembership(add bool) operation {
	return func(r *http.Request) (any, error) {
		var in struct {
			ThingGroupName string `json:"thingGroupName"`
			ThingGroupArn  string `json:"thingGroupArn"`
			ThingName      string `json:"thingName"`
			ThingArn       string `json:"thingArn"`
		}
		if err := readJSON(r, &in); err != nil {
			return nil, err
		}
		group, thing := in.ThingGroupName, in.ThingName
		if group == "" {
			group = arn.Name(in.ThingGroupArn)
		}
		if thing == "" {
			thing = arn.Name(in.ThingArn)
		}
		if group == "" || thing == "" {
			return nil, localiot.Errorf(localiot.CodeInvalidRequest, "name the thing group (thingGroupName or thingGroupArn) and the thing (thingName or thingArn)")
		}
		var err error
		if add {
			err = s.AddThingToThingGroup(group, thing)
		} else {
			err = s.RemoveThingFromThingGroup(group, thing)
		}
		if err != nil {
			return nil, err
		}
		return empty{}, nil
	}
}

func (s api) handleListThingsInThingGroup(r *http.Request) (any, error) {
	max, err := maxResults(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	things, next, err := s.ListThingsInThingGroup(r.PathValue("thingGroupName"), q.Get("recursive") == "true", max, q.Get("nextToken"))
	if err != nil {
		return nil, err
	}
	if things == nil {
		things = []string{} // AWS lists an empty group as [], not null
	}
	return &listThingsInThingGroupResponse{Things: things, paged: paged{next}}, nil
}

type listThingsInThingGroupResponse struct {
	Things []string `json:"things"`
	paged
}

func (s api) handleListThingGroupsForThing(r *http.Request) (any, error) {
	max, err := maxResults(r)
	if err != nil {
		return nil, err
	}
	names, err := s.ThingGroupsForThing(r.PathValue("thingName"))
	if err != nil {
		return nil, err
	}
	names, next := localiot.PageStrings(names, max, r.URL.Query().Get("nextToken"))
	return s.thingGroupList(names, next), nil
}

// thingGroupList is ListThingGroups's and ListThingGroupsForThing's answer.
type thingGroupList struct {
	ThingGroups []groupNameAndArn `json:"thingGroups"`
	paged
}

func (s api) thingGroupList(names []string, next string) *thingGroupList {
	out := &thingGroupList{ThingGroups: make([]groupNameAndArn, 0, len(names)), paged: paged{next}}
	for _, n := range names {
		out.ThingGroups = append(out.ThingGroups, s.groupNameAndArn(n))
	}
	return out
}

func (s api) handleListThingGroups(r *http.Request) (any, error) {
	max, err := maxResults(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	var recursive *bool
	if q.Has("recursive") {
		b, err := queryBool(r, "recursive")
		if err != nil {
			return nil, err
		}
		recursive = &b
	}
	groups, err := s.ListThingGroups(q.Get("parentGroup"), q.Get("namePrefixFilter"), recursive)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(groups))
	for i, g := range groups {
		names[i] = g.Name
	}
	names, next := localiot.PageStrings(names, max, q.Get("nextToken"))
	return s.thingGroupList(names, next), nil
}

func (s api) handleUpdateThingGroupsForThing(r *http.Request) (any, error) {
	var in struct {
		ThingName             string   `json:"thingName"`
		ThingGroupsToAdd      []string `json:"thingGroupsToAdd"`
		ThingGroupsToRemove   []string `json:"thingGroupsToRemove"`
		OverrideDynamicGroups bool     `json:"overrideDynamicGroups"`
	}
	if err := readJSON(r, &in); err != nil {
		return nil, err
	}
	if in.ThingName == "" {
		return nil, localiot.Errorf(localiot.CodeInvalidRequest, "thingName is required")
	}
	if len(in.ThingGroupsToAdd) > 10 || len(in.ThingGroupsToRemove) > 10 {
		return nil, localiot.Errorf(localiot.CodeInvalidRequest, "at most 10 groups to add and 10 to remove in one call")
	}
	// Check everything first, so that a bad name changes nothing.
	for _, g := range append(slices.Clone(in.ThingGroupsToAdd), in.ThingGroupsToRemove...) {
		if _, err := s.DescribeThingGroup(g); err != nil {
			return nil, err
		}
	}
	if _, err := s.DescribeThing(in.ThingName); err != nil {
		return nil, err
	}
	for _, g := range in.ThingGroupsToRemove {
		if err := s.RemoveThingFromThingGroup(g, in.ThingName); err != nil {
			return nil, err
		}
	}
	for _, g := range in.ThingGroupsToAdd {
		if err := s.AddThingToThingGroup(g, in.ThingName); err != nil {
			return nil, err
		}
	}
	return empty{}, nil
}

// thingGroupPropsJSON is thingGroupProperties as CreateThingGroup and UpdateThingGroup take it.
type thingGroupPropsJSON struct {
	Description      string `json:"thingGroupDescription"`
	AttributePayload *struct {
		Attributes map[string]string `json:"attributes"`
		Merge      bool              `json:"merge"`
	} `json:"attributePayload"`
}

func (p *thingGroupPropsJSON) attributes() map[string]string {
	if p.AttributePayload == nil {
		return nil
	}
	return p.AttributePayload.Attributes
}

func (p *thingGroupPropsJSON) merge() bool {
	return p.AttributePayload != nil && p.AttributePayload.Merge
}

// groupUpdate is UpdateThingGroup's request, and UpdateDynamicThingGroup's with its query.
type groupUpdate struct {
	dynamicGroupQuery
	ThingGroupProperties *thingGroupPropsJSON `json:"thingGroupProperties"`
	ExpectedVersion      int64                `json:"expectedVersion"`
}

func readGroupUpdate(r *http.Request) (*groupUpdate, error) {
	var in groupUpdate
	if err := readJSON(r, &in); err != nil {
		return nil, err
	}
	if in.ThingGroupProperties == nil {
		return nil, localiot.Errorf(localiot.CodeInvalidRequest, "thingGroupProperties is required")
	}
	return &in, nil
}

func (s api) handleUpdateThingGroup(r *http.Request) (any, error) {
	in, err := readGroupUpdate(r)
	if err != nil {
		return nil, err
	}
	p := in.ThingGroupProperties
	v, err := s.UpdateThingGroup(r.PathValue("thingGroupName"), p.Description, p.attributes(), p.merge(), in.ExpectedVersion)
	if err != nil {
		return nil, err
	}
	return &versionResponse{Version: v}, nil
}

// versionResponse is the answer of an update that returns the new version.
type versionResponse struct {
	Version int64 `json:"version"`
}
