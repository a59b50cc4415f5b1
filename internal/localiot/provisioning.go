package localiot

import (
	"regexp"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/otaflow/otaflow/internal/arn"
	"github.com/otaflow/otaflow/internal/localiot/store"
)

// Fleet provisioning templates (CreateProvisioningTemplate and its companions, with versions):
// what a device that holds only a claim certificate becomes when it provisions itself
// (provision.go).

const recordProvisioningTemplate = "provisioning-template"

// AWS IoT's documented fleet provisioning quotas: templates per account, versions per template.
const (
	MaxProvisioningTemplates = 256
	MaxTemplateVersions      = 5
	maxTemplateBody          = 10240
)

// Template types (AWS's TemplateType).
const (
	TemplateFleetProvisioning = "FLEET_PROVISIONING"
	TemplateJITP              = "JITP"
)

// CodeVersionsLimitExceeded is AWS's VersionsLimitExceededException.
const CodeVersionsLimitExceeded ErrorCode = "VersionsLimitExceeded"

var templateNameRE = regexp.MustCompile(`^[0-9A-Za-z_-]{1,36}$`)

// ProvisioningTemplate is one fleet provisioning template with its versions.
type ProvisioningTemplate struct {
	Name           string            `json:"templateName"`
	Arn            string            `json:"templateArn"`
	Description    string            `json:"description,omitempty"`
	Enabled        bool              `json:"enabled"`
	RoleArn        string            `json:"provisioningRoleArn"`
	Type           string            `json:"type"`
	CreatedAt      time.Time         `json:"creationDate"`
	LastModified   time.Time         `json:"lastModifiedDate"`
	DefaultVersion int               `json:"defaultVersionId"`
	Versions       []TemplateVersion `json:"versions"`
	// NextVersion numbers the next version (a deleted version's number is not used again).
	NextVersion int `json:"nextVersion"`
}

// TemplateVersion is one version of a template's body.
type TemplateVersion struct {
	ID        int       `json:"versionId"`
	Body      string    `json:"templateBody"`
	CreatedAt time.Time `json:"creationDate"`
}

// Body is the default version's body.
func (p *ProvisioningTemplate) Body() string {
	for _, v := range p.Versions {
		if v.ID == p.DefaultVersion {
			return v.Body
		}
	}
	return ""
}

// ProvisioningTemplateArn is a template's ARN.
func (s *Service) ProvisioningTemplateArn(name string) string {
	return arn.IoT(s.region, s.account, "provisioningtemplate", name)
}

// ProvisioningTemplateInput is CreateProvisioningTemplate's request.
type ProvisioningTemplateInput struct {
	Name, Description, Body, RoleArn, Type string
	Enabled                                bool
	// HookArn is a pre-provisioning hook's target (a Lambda function: not served here).
	HookArn string
}

func checkTemplateName(name string) error {
	if !templateNameRE.MatchString(name) {
		return Errorf(CodeInvalidRequest, "templateName %q: use 1-36 of 0-9 A-Z a-z _ -", name)
	}
	return nil
}

func checkTemplateBody(body string) error {
	if len(body) > maxTemplateBody {
		return Errorf(CodeInvalidRequest, "templateBody is %d characters; the limit is %d", len(body), maxTemplateBody)
	}
	_, err := parseTemplate(body)
	return err
}

func checkRoleArn(role string) error {
	if len(role) < 20 || len(role) > 2048 {
		return Errorf(CodeInvalidRequest, "provisioningRoleArn must be a role's ARN (20-2048 characters), e.g. arn:aws:iam::123456789012:role/Provisioning")
	}
	return nil
}

func refuseHook(hook string) error {
	if hook != "" {
		return Errorf(CodeInvalidRequest, "preProvisioningHook: this jobs service runs no Lambda functions, so it cannot call a pre-provisioning hook; leave it out and validate devices with the template's parameters instead")
	}
	return nil
}

// CreateProvisioningTemplate stores a template with its first version as the default.
func (s *Service) CreateProvisioningTemplate(in ProvisioningTemplateInput) (*ProvisioningTemplate, error) {
	if err := checkTemplateName(in.Name); err != nil {
		return nil, err
	}
	if len(in.Description) > 500 {
		return nil, Errorf(CodeInvalidRequest, "description: at most 500 characters")
	}
	if err := checkRoleArn(in.RoleArn); err != nil {
		return nil, err
	}
	if err := refuseHook(in.HookArn); err != nil {
		return nil, err
	}
	switch in.Type {
	case "":
		in.Type = TemplateFleetProvisioning
	case TemplateFleetProvisioning:
	case TemplateJITP:
		return nil, Errorf(CodeInvalidRequest, "type JITP: just-in-time provisioning needs CA certificates registered with RegisterCACertificate, which this jobs service does not serve; use FLEET_PROVISIONING")
	default:
		return nil, Errorf(CodeInvalidRequest, "type %q: use FLEET_PROVISIONING", in.Type)
	}
	if err := checkTemplateBody(in.Body); err != nil {
		return nil, err
	}
	now := s.Clock()
	tpl := &ProvisioningTemplate{Name: in.Name, Arn: s.ProvisioningTemplateArn(in.Name), Description: in.Description, Enabled: in.Enabled,
		RoleArn: in.RoleArn, Type: in.Type, CreatedAt: now, LastModified: now, DefaultVersion: 1,
		Versions: []TemplateVersion{{ID: 1, Body: in.Body, CreatedAt: now}}, NextVersion: 2}
	err := s.st.Update(func(t store.Tx) error {
		existing, err := t.Record(recordProvisioningTemplate, in.Name)
		if err != nil {
			return err
		}
		if existing != nil {
			return Errorf(CodeAlreadyExists, "provisioning template %s already exists", in.Name)
		}
		if s.quotas {
			all, err := t.Records(recordProvisioningTemplate)
			if err != nil {
				return err
			}
			if len(all) >= MaxProvisioningTemplates {
				return Errorf(CodeLimitExceeded, "this account has %d provisioning templates, AWS IoT's limit; delete one first", len(all))
			}
		}
		return putRecord(t, recordProvisioningTemplate, in.Name, tpl)
	})
	if err != nil {
		return nil, err
	}
	return tpl, nil
}

func mustProvisioningTemplate(t store.Tx, name string) (*ProvisioningTemplate, error) {
	tpl, err := getRecord[ProvisioningTemplate](t, recordProvisioningTemplate, arn.Name(name))
	if err == nil && tpl == nil {
		err = Errorf(CodeResourceNotFound, "provisioning template %s does not exist", arn.Name(name))
	}
	return tpl, err
}

// DescribeProvisioningTemplate is one template (its body: the default version's).
func (s *Service) DescribeProvisioningTemplate(name string) (*ProvisioningTemplate, error) {
	var out *ProvisioningTemplate
	err := s.st.View(func(t store.Tx) (err error) {
		out, err = mustProvisioningTemplate(t, name)
		return err
	})
	return out, err
}

// ListProvisioningTemplates lists templates by name, a page at a time.
func (s *Service) ListProvisioningTemplates(max int, token string) ([]*ProvisioningTemplate, string, error) {
	var all []*ProvisioningTemplate
	err := s.st.View(func(t store.Tx) (err error) {
		all, err = allRecords[ProvisioningTemplate](t, recordProvisioningTemplate)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Name < all[j].Name })
	return PageOf(all, max, token, "nextToken")
}

// PageOf is one page of a list sorted by the caller: token (the request's tokenName) is the
// offset the last page ended at.
func PageOf[T any](all []T, max int, token, tokenName string) ([]T, string, error) {
	if max <= 0 || max > 250 {
		max = 250
	}
	start := 0
	if token != "" {
		n, err := strconv.Atoi(token)
		if err != nil || n < 0 || n > len(all) {
			return nil, "", Errorf(CodeInvalidRequest, "%s %q is not one this service handed out", tokenName, token)
		}
		start = n
	}
	end := min(start+max, len(all))
	next := ""
	if end < len(all) {
		next = strconv.Itoa(end)
	}
	return all[start:end], next, nil
}

// ProvisioningTemplateUpdate is UpdateProvisioningTemplate's request; nil leaves a field as is.
type ProvisioningTemplateUpdate struct {
	Description    *string
	Enabled        *bool
	DefaultVersion *int
	RoleArn        *string
	HookArn        string
}

// UpdateProvisioningTemplate changes a template's description, enabled flag, default version
// or role.
func (s *Service) UpdateProvisioningTemplate(name string, u ProvisioningTemplateUpdate) error {
	if err := refuseHook(u.HookArn); err != nil {
		return err
	}
	return s.updateProvisioningTemplate(name, func(tpl *ProvisioningTemplate) error {
		if u.Description != nil {
			if len(*u.Description) > 500 {
				return Errorf(CodeInvalidRequest, "description: at most 500 characters")
			}
			tpl.Description = *u.Description
		}
		if u.Enabled != nil {
			tpl.Enabled = *u.Enabled
		}
		if u.RoleArn != nil {
			if err := checkRoleArn(*u.RoleArn); err != nil {
				return err
			}
			tpl.RoleArn = *u.RoleArn
		}
		if u.DefaultVersion != nil {
			if !slices.ContainsFunc(tpl.Versions, func(v TemplateVersion) bool { return v.ID == *u.DefaultVersion }) {
				return Errorf(CodeResourceNotFound, "provisioning template %s has no version %d", tpl.Name, *u.DefaultVersion)
			}
			tpl.DefaultVersion = *u.DefaultVersion
		}
		return nil
	})
}

func (s *Service) updateProvisioningTemplate(name string, fn func(*ProvisioningTemplate) error) error {
	return s.st.Update(func(t store.Tx) error {
		tpl, err := mustProvisioningTemplate(t, name)
		if err != nil {
			return err
		}
		if err := fn(tpl); err != nil {
			return err
		}
		tpl.LastModified = s.Clock()
		return putRecord(t, recordProvisioningTemplate, tpl.Name, tpl)
	})
}

// DeleteProvisioningTemplate deletes a template and its versions. Devices provisioned from it
// stay as they are.
func (s *Service) DeleteProvisioningTemplate(name string) error {
	return s.st.Update(func(t store.Tx) error {
		tpl, err := mustProvisioningTemplate(t, name)
		if err != nil {
			return err
		}
		return t.DeleteRecord(recordProvisioningTemplate, tpl.Name)
	})
}

// CreateProvisioningTemplateVersion adds a version (at most MaxTemplateVersions are kept).
func (s *Service) CreateProvisioningTemplateVersion(name, body string, setDefault bool) (*ProvisioningTemplate, *TemplateVersion, error) {
	if err := checkTemplateBody(body); err != nil {
		return nil, nil, err
	}
	var out *ProvisioningTemplate
	var v TemplateVersion
	err := s.updateProvisioningTemplate(name, func(tpl *ProvisioningTemplate) error {
		if len(tpl.Versions) >= MaxTemplateVersions {
			return Errorf(CodeVersionsLimitExceeded, "provisioning template %s has %d versions, AWS IoT's limit; delete one that is not the default first (DeleteProvisioningTemplateVersion)", tpl.Name, len(tpl.Versions))
		}
		v = TemplateVersion{ID: tpl.NextVersion, Body: body, CreatedAt: s.Clock()}
		tpl.Versions = append(tpl.Versions, v)
		tpl.NextVersion++
		if setDefault {
			tpl.DefaultVersion = v.ID
		}
		out = tpl
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return out, &v, nil
}

// ProvisioningTemplateVersion is one version of a template.
func (s *Service) ProvisioningTemplateVersion(name string, id int) (*ProvisioningTemplate, *TemplateVersion, error) {
	tpl, err := s.DescribeProvisioningTemplate(name)
	if err != nil {
		return nil, nil, err
	}
	for _, v := range tpl.Versions {
		if v.ID == id {
			return tpl, &v, nil
		}
	}
	return nil, nil, Errorf(CodeResourceNotFound, "provisioning template %s has no version %d", tpl.Name, id)
}

// DeleteProvisioningTemplateVersion deletes a version that is not the default.
func (s *Service) DeleteProvisioningTemplateVersion(name string, id int) error {
	return s.updateProvisioningTemplate(name, func(tpl *ProvisioningTemplate) error {
		i := slices.IndexFunc(tpl.Versions, func(v TemplateVersion) bool { return v.ID == id })
		switch {
		case i < 0:
			return Errorf(CodeResourceNotFound, "provisioning template %s has no version %d", tpl.Name, id)
		case id == tpl.DefaultVersion:
			return Errorf(CodeDeleteConflict, "version %d is provisioning template %s's default; make another version the default first (UpdateProvisioningTemplate --default-version-id)", id, tpl.Name)
		}
		tpl.Versions = slices.Delete(tpl.Versions, i, i+1)
		return nil
	})
}
