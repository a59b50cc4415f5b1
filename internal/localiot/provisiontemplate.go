package localiot

import (
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// A provisioning template's body, as AWS IoT defines it: Parameters, optional Mappings and
// Conditions, Resources (one thing, one certificate, policies) and a DeviceConfiguration handed
// to the device. Values may use the intrinsic functions Ref, Fn::Join, Fn::Select, Fn::Split,
// Fn::Sub, Fn::FindInMap, Fn::If, Fn::Equals, Fn::Not, Fn::And and Fn::Or.

// Resource types a template may hold.
const (
	resourceThing       = "AWS::IoT::Thing"
	resourceCertificate = "AWS::IoT::Certificate"
	resourcePolicy      = "AWS::IoT::Policy"
	// ParamCertificateID is the parameter the service sets to the provisioned certificate's ID.
	ParamCertificateID = "AWS::IoT::Certificate::Id"
)

type templateResource struct {
	Type             string            `json:"Type"`
	Properties       map[string]any    `json:"Properties"`
	OverrideSettings map[string]string `json:"OverrideSettings"`
	Condition        string            `json:"Condition"`
}

type provisioningBody struct {
	Parameters map[string]struct {
		Type    string `json:"Type"`
		Default any    `json:"Default"`
	} `json:"Parameters"`
	Mappings            map[string]map[string]map[string]any `json:"Mappings"`
	Conditions          map[string]any                       `json:"Conditions"`
	Resources           map[string]templateResource          `json:"Resources"`
	DeviceConfiguration map[string]any                       `json:"DeviceConfiguration"`
}

var overrideValues = []string{"DO_NOTHING", "REPLACE", "FAIL", "MERGE"}

// parseTemplate reads and checks a template body: what it can never provision is refused when
// the template is created, not when a device first uses it.
func parseTemplate(body string) (*provisioningBody, error) {
	var b provisioningBody
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return nil, Errorf(CodeInvalidRequest, "templateBody is not a provisioning template (JSON with Parameters, Resources and optionally Mappings, Conditions, DeviceConfiguration): %v", err)
	}
	if len(b.Resources) == 0 {
		return nil, Errorf(CodeInvalidRequest, "templateBody has no Resources: a template provisions at least a thing (%s) and its certificate (%s)", resourceThing, resourceCertificate)
	}
	count := map[string]int{}
	for _, name := range slices.Sorted(maps.Keys(b.Resources)) {
		r := b.Resources[name]
		count[r.Type]++
		switch r.Type {
		case resourceThing:
			if _, ok := r.Properties["ThingName"]; !ok {
				return nil, Errorf(CodeInvalidRequest, "templateBody: resource %s (%s) has no ThingName", name, r.Type)
			}
			for k, v := range r.OverrideSettings {
				if !slices.Contains([]string{"AttributePayload", "ThingTypeName", "ThingGroups"}, k) || !slices.Contains(overrideValues, v) {
					return nil, Errorf(CodeInvalidRequest, "templateBody: resource %s: OverrideSettings %s: %s; use AttributePayload, ThingTypeName or ThingGroups set to %s", name, k, v, strings.Join(overrideValues, ", "))
				}
			}
		case resourceCertificate:
			_, id := r.Properties["CertificateId"]
			_, pem := r.Properties["CertificatePem"]
			if !id && !pem {
				return nil, Errorf(CodeInvalidRequest, "templateBody: resource %s (%s) has neither CertificateId nor CertificatePem; fleet provisioning gives it as {\"CertificateId\": {\"Ref\": %q}}", name, r.Type, ParamCertificateID)
			}
		case resourcePolicy:
		default:
			return nil, Errorf(CodeInvalidRequest, "templateBody: resource %s has type %q; a template may hold %s, %s and %s", name, r.Type, resourceThing, resourceCertificate, resourcePolicy)
		}
		if r.Condition != "" {
			if _, ok := b.Conditions[r.Condition]; !ok {
				return nil, Errorf(CodeInvalidRequest, "templateBody: resource %s names condition %q, which Conditions does not define", name, r.Condition)
			}
		}
	}
	if count[resourceThing] > 1 || count[resourceCertificate] > 1 {
		return nil, Errorf(CodeInvalidRequest, "templateBody: a template provisions one thing and one certificate (it has %d and %d)", count[resourceThing], count[resourceCertificate])
	}
	return &b, nil
}

// templateEval evaluates a template's values for one device's parameters.
type templateEval struct {
	b      *provisioningBody
	params map[string]string
}

func newTemplateEval(b *provisioningBody, given map[string]string) (*templateEval, error) {
	params := map[string]string{}
	for name, p := range b.Parameters {
		if v, ok := given[name]; ok {
			params[name] = v
			continue
		}
		if p.Default != nil {
			params[name] = fmt.Sprint(p.Default)
			continue
		}
		return nil, Errorf(CodeInvalidRequest, "parameter %s is required by the template and was not given", name)
	}
	if id, ok := given[ParamCertificateID]; ok {
		params[ParamCertificateID] = id
	}
	return &templateEval{b: b, params: params}, nil
}

var subRE = regexp.MustCompile(`\$\{([^}]+)\}`)

// value evaluates v: a literal, a list, an object, or an intrinsic function.
func (e *templateEval) value(v any) (any, error) {
	switch x := v.(type) {
	case []any:
		out := make([]any, 0, len(x))
		for _, item := range x {
			r, err := e.value(item)
			if err != nil {
				return nil, err
			}
			out = append(out, r)
		}
		return out, nil
	case map[string]any:
		if len(x) == 1 {
			for fn, arg := range x {
				if fn == "Ref" || strings.HasPrefix(fn, "Fn::") || fn == "Condition" {
					return e.function(fn, arg)
				}
			}
		}
		out := make(map[string]any, len(x))
		for k, item := range x {
			r, err := e.value(item)
			if err != nil {
				return nil, err
			}
			out[k] = r
		}
		return out, nil
	}
	return v, nil
}

func (e *templateEval) str(v any) (string, error) {
	r, err := e.value(v)
	if err != nil {
		return "", err
	}
	switch x := r.(type) {
	case string:
		return x, nil
	case float64, bool:
		return fmt.Sprint(x), nil
	}
	return "", Errorf(CodeInvalidRequest, "template: %v is not a string", r)
}

func (e *templateEval) args(fn string, arg any, n int) ([]any, error) {
	list, ok := arg.([]any)
	if !ok || len(list) != n {
		return nil, Errorf(CodeInvalidRequest, "template: %s takes a list of %d", fn, n)
	}
	return list, nil
}

func (e *templateEval) function(fn string, arg any) (any, error) {
	switch fn {
	case "Ref":
		name, _ := arg.(string)
		v, ok := e.params[name]
		if !ok {
			return nil, Errorf(CodeInvalidRequest, "template: Ref %q names no parameter", name)
		}
		return v, nil
	case "Fn::Join":
		a, err := e.args(fn, arg, 2)
		if err != nil {
			return nil, err
		}
		delim, _ := a[0].(string)
		items, err := e.value(a[1])
		if err != nil {
			return nil, err
		}
		list, ok := items.([]any)
		if !ok {
			return nil, Errorf(CodeInvalidRequest, "template: Fn::Join joins a list")
		}
		parts := make([]string, len(list))
		for i, item := range list {
			if parts[i], err = e.str(item); err != nil {
				return nil, err
			}
		}
		return strings.Join(parts, delim), nil
	case "Fn::Split":
		a, err := e.args(fn, arg, 2)
		if err != nil {
			return nil, err
		}
		delim, _ := a[0].(string)
		s, err := e.str(a[1])
		if err != nil {
			return nil, err
		}
		var out []any
		for _, p := range strings.Split(s, delim) {
			out = append(out, p)
		}
		return out, nil
	case "Fn::Select":
		a, err := e.args(fn, arg, 2)
		if err != nil {
			return nil, err
		}
		idx, err := e.str(a[0])
		if err != nil {
			return nil, err
		}
		i, err := strconv.Atoi(idx)
		items, err2 := e.value(a[1])
		list, ok := items.([]any)
		if err != nil || err2 != nil || !ok || i < 0 || i >= len(list) {
			return nil, Errorf(CodeInvalidRequest, "template: Fn::Select %v of %v is out of range", a[0], items)
		}
		return list[i], nil
	case "Fn::Sub":
		s, ok := arg.(string)
		if !ok {
			return nil, Errorf(CodeInvalidRequest, "template: Fn::Sub takes a string")
		}
		var missing string
		out := subRE.ReplaceAllStringFunc(s, func(m string) string {
			name := m[2 : len(m)-1]
			v, ok := e.params[name]
			if !ok {
				missing = name
			}
			return v
		})
		if missing != "" {
			return nil, Errorf(CodeInvalidRequest, "template: Fn::Sub names %q, which is no parameter", missing)
		}
		return out, nil
	case "Fn::FindInMap":
		a, err := e.args(fn, arg, 3)
		if err != nil {
			return nil, err
		}
		keys := make([]string, 3)
		for i := range a {
			if keys[i], err = e.str(a[i]); err != nil {
				return nil, err
			}
		}
		v, ok := e.b.Mappings[keys[0]][keys[1]][keys[2]]
		if !ok {
			return nil, Errorf(CodeInvalidRequest, "template: Fn::FindInMap: Mappings has no %s.%s.%s", keys[0], keys[1], keys[2])
		}
		return v, nil
	case "Fn::If":
		a, err := e.args(fn, arg, 3)
		if err != nil {
			return nil, err
		}
		name, _ := a[0].(string)
		ok, err := e.condition(name)
		if err != nil {
			return nil, err
		}
		if ok {
			return e.value(a[1])
		}
		return e.value(a[2])
	case "Condition":
		name, _ := arg.(string)
		return e.condition(name)
	case "Fn::Equals":
		a, err := e.args(fn, arg, 2)
		if err != nil {
			return nil, err
		}
		x, err := e.str(a[0])
		if err != nil {
			return nil, err
		}
		y, err := e.str(a[1])
		return x == y, err
	case "Fn::Not", "Fn::And", "Fn::Or":
		list, ok := arg.([]any)
		if !ok || len(list) == 0 {
			return nil, Errorf(CodeInvalidRequest, "template: %s takes a list of conditions", fn)
		}
		var all, anyTrue = true, false
		for _, c := range list {
			r, err := e.value(c)
			if err != nil {
				return nil, err
			}
			b, ok := r.(bool)
			if !ok {
				return nil, Errorf(CodeInvalidRequest, "template: %s: %v is not a condition", fn, c)
			}
			all, anyTrue = all && b, anyTrue || b
		}
		switch fn {
		case "Fn::Not":
			return !all, nil
		case "Fn::And":
			return all, nil
		}
		return anyTrue, nil
	}
	return nil, Errorf(CodeInvalidRequest, "template: %s is not an intrinsic function this service evaluates (Ref, Fn::Join, Fn::Select, Fn::Split, Fn::Sub, Fn::FindInMap, Fn::If, Fn::Equals, Fn::Not, Fn::And, Fn::Or)", fn)
}

func (e *templateEval) condition(name string) (bool, error) {
	c, ok := e.b.Conditions[name]
	if !ok {
		return false, Errorf(CodeInvalidRequest, "template: condition %q is not defined in Conditions", name)
	}
	r, err := e.value(c)
	if err != nil {
		return false, err
	}
	b, ok := r.(bool)
	if !ok {
		return false, Errorf(CodeInvalidRequest, "template: condition %q is not true or false", name)
	}
	return b, nil
}

// provisionPlan is what a template makes of one device's parameters.
type provisionPlan struct {
	ThingName     string
	Attributes    map[string]string
	ThingType     string
	Groups        []string
	Override      map[string]string
	HasThing      bool
	CertificateID string
	// CertificatePem (and CACertificatePem) name a certificate to register (RegisterThing).
	CertificatePem, CACertificatePem string
	CertStatus                       string
	HasCert                          bool
	Policies                         []string
	DeviceConfig                     map[string]any
}

// plan evaluates the template for a device's parameters.
func (e *templateEval) plan() (*provisionPlan, error) {
	p := &provisionPlan{CertStatus: CertActive}
	for _, name := range slices.Sorted(maps.Keys(e.b.Resources)) {
		r := e.b.Resources[name]
		if r.Condition != "" {
			ok, err := e.condition(r.Condition)
			if err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
		}
		switch r.Type {
		case resourceThing:
			p.HasThing, p.Override = true, r.OverrideSettings
			var err error
			if p.ThingName, err = e.str(r.Properties["ThingName"]); err != nil {
				return nil, err
			}
			if v, ok := r.Properties["ThingTypeName"]; ok {
				if p.ThingType, err = e.str(v); err != nil {
					return nil, err
				}
			}
			if v, ok := r.Properties["AttributePayload"]; ok {
				attrs, err := e.value(v)
				if err != nil {
					return nil, err
				}
				m, ok := attrs.(map[string]any)
				if !ok {
					return nil, Errorf(CodeInvalidRequest, "template: AttributePayload is not an object")
				}
				p.Attributes = map[string]string{}
				for k, a := range m {
					if p.Attributes[k], err = e.str(a); err != nil {
						return nil, err
					}
				}
			}
			if v, ok := r.Properties["ThingGroups"]; ok {
				groups, err := e.value(v)
				if err != nil {
					return nil, err
				}
				list, ok := groups.([]any)
				if !ok {
					return nil, Errorf(CodeInvalidRequest, "template: ThingGroups is not a list")
				}
				for _, g := range list {
					name, err := e.str(g)
					if err != nil {
						return nil, err
					}
					p.Groups = append(p.Groups, name)
				}
			}
		case resourceCertificate:
			p.HasCert = true
			for prop, dst := range map[string]*string{"CertificateId": &p.CertificateID, "CertificatePem": &p.CertificatePem, "CACertificatePem": &p.CACertificatePem} {
				if v, ok := r.Properties[prop]; ok {
					var err error
					if *dst, err = e.str(v); err != nil {
						return nil, err
					}
				}
			}
			if v, ok := r.Properties["Status"]; ok {
				var err error
				if p.CertStatus, err = e.str(v); err != nil {
					return nil, err
				}
				if p.CertStatus != CertActive && p.CertStatus != CertInactive {
					return nil, Errorf(CodeInvalidRequest, "template: the certificate's Status is %q; use ACTIVE or INACTIVE", p.CertStatus)
				}
			}
		case resourcePolicy:
			p.Policies = append(p.Policies, name)
		}
	}
	if e.b.DeviceConfiguration != nil {
		cfg, err := e.value(e.b.DeviceConfiguration)
		if err != nil {
			return nil, err
		}
		p.DeviceConfig, _ = cfg.(map[string]any)
	}
	return p, nil
}
