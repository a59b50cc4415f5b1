package rest

import (
	"net/http"
	"strconv"

	"github.com/otaflow/otaflow/internal/localiot"
)

func (s api) handleCreateThing(r *http.Request) (any, error) {
	var in struct {
		AttributePayload struct {
			Attributes map[string]string `json:"attributes"`
		} `json:"attributePayload"`
		ThingTypeName    string `json:"thingTypeName"`
		BillingGroupName string `json:"billingGroupName"`
	}
	if err := readJSON(r, &in); err != nil {
		return nil, err
	}
	if in.BillingGroupName != "" {
		return nil, localiot.Errorf(localiot.CodeResourceNotFound, "billing group %s does not exist (this jobs service keeps no billing groups)", in.BillingGroupName)
	}
	if err := localiot.CheckAttributes(in.AttributePayload.Attributes); err != nil {
		return nil, err
	}
	th, err := s.CreateTypedThing(r.PathValue("thingName"), in.ThingTypeName, in.AttributePayload.Attributes)
	if err != nil {
		return nil, err
	}
	return &createThingResponse{ThingName: th.Name, ThingArn: th.Arn, ThingID: th.ID}, nil
}

type createThingResponse struct {
	ThingName string `json:"thingName"`
	ThingArn  string `json:"thingArn"`
	ThingID   string `json:"thingId"`
}

func (s api) handleDescribeThing(r *http.Request) (any, error) {
	th, err := s.DescribeThing(r.PathValue("thingName"))
	if err != nil {
		return nil, err
	}
	return &describeThingResponse{ThingName: th.Name, ThingArn: th.Arn, ThingID: th.ID, Attributes: orEmpty(th.Attributes),
		Version: th.Version, DefaultClientID: th.Name, ThingTypeName: th.TypeName}, nil
}

type describeThingResponse struct {
	ThingName       string            `json:"thingName"`
	ThingArn        string            `json:"thingArn"`
	ThingID         string            `json:"thingId"`
	Attributes      map[string]string `json:"attributes"`
	Version         int64             `json:"version"`
	DefaultClientID string            `json:"defaultClientId"`
	ThingTypeName   string            `json:"thingTypeName,omitempty"`
}

func (s api) handleListThings(r *http.Request) (any, error) {
	max, err := maxResults(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	if err := onlyQuery(r, "nextToken", "maxResults", "attributeName", "attributeValue", "thingTypeName", "usePrefixAttributeValue"); err != nil {
		return nil, err
	}
	things, next, err := s.ListThings(q.Get("attributeName"), q.Get("attributeValue"), q.Get("usePrefixAttributeValue") == "true", q.Get("thingTypeName"), max, q.Get("nextToken"))
	if err != nil {
		return nil, err
	}
	out := &listThingsResponse{Things: make([]thingAttribute, 0, len(things)), paged: paged{next}}
	for _, th := range things {
		out.Things = append(out.Things, thingAttribute{ThingName: th.Name, ThingArn: th.Arn, Attributes: orEmpty(th.Attributes),
			Version: th.Version, ThingTypeName: th.TypeName})
	}
	return out, nil
}

type listThingsResponse struct {
	Things []thingAttribute `json:"things"`
	paged
}

// thingAttribute is AWS's ThingAttribute: a thing as ListThings lists it.
type thingAttribute struct {
	ThingName     string            `json:"thingName"`
	ThingArn      string            `json:"thingArn"`
	Attributes    map[string]string `json:"attributes"`
	Version       int64             `json:"version"`
	ThingTypeName string            `json:"thingTypeName,omitempty"`
}

func (s api) handleDeleteThing(r *http.Request) (any, error) {
	var expected int64
	if v := r.URL.Query().Get("expectedVersion"); v != "" {
		expected, _ = strconv.ParseInt(v, 10, 64)
	}
	if err := s.DeleteThing(r.PathValue("thingName"), expected); err != nil {
		return nil, err
	}
	return nil, nil
}

func (s api) handleUpdateThing(r *http.Request) (any, error) {
	var in struct {
		AttributePayload *struct {
			Attributes map[string]string `json:"attributes"`
			Merge      bool              `json:"merge"`
		} `json:"attributePayload"`
		ExpectedVersion int64  `json:"expectedVersion"`
		ThingTypeName   string `json:"thingTypeName"`
		RemoveThingType bool   `json:"removeThingType"`
	}
	if err := readJSON(r, &in); err != nil {
		return nil, err
	}
	if in.ThingTypeName != "" && in.RemoveThingType {
		return nil, localiot.Errorf(localiot.CodeInvalidRequest, "give thingTypeName or removeThingType, not both")
	}
	var typeChange []string
	switch {
	case in.ThingTypeName != "":
		typeChange = []string{in.ThingTypeName}
	case in.RemoveThingType:
		typeChange = []string{""}
	}
	var attrs map[string]string
	merge := in.AttributePayload == nil // no payload: the attributes stay
	if p := in.AttributePayload; p != nil {
		attrs, merge = p.Attributes, p.Merge
	}
	if err := s.UpdateThing(r.PathValue("thingName"), attrs, merge, in.ExpectedVersion, typeChange...); err != nil {
		return nil, err
	}
	return empty{}, nil
}

// orEmpty is attrs, or {} for none: AWS answers a thing without attributes with {}.
func orEmpty(attrs map[string]string) map[string]string {
	if attrs == nil {
		return map[string]string{}
	}
	return attrs
}
