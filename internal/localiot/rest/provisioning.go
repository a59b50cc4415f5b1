package rest

import (
	"net/http"
	"strconv"

	"github.com/otaflow/otaflow/internal/localiot"
)

// Fleet provisioning templates and their versions (localiot/provisioning.go).

type provisioningHook struct {
	TargetArn string `json:"targetArn"`
}

func (h *provisioningHook) arn() string {
	if h == nil {
		return ""
	}
	return h.TargetArn
}

func (s api) handleCreateProvisioningTemplate(r *http.Request) (any, error) {
	var in struct {
		TemplateName string            `json:"templateName"`
		Description  string            `json:"description"`
		TemplateBody string            `json:"templateBody"`
		Enabled      bool              `json:"enabled"`
		RoleArn      string            `json:"provisioningRoleArn"`
		Hook         *provisioningHook `json:"preProvisioningHook"`
		Tags         []map[string]any  `json:"tags"`
		Type         string            `json:"type"`
	}
	if err := readJSON(r, &in); err != nil {
		return nil, err
	}
	tpl, err := s.CreateProvisioningTemplate(localiot.ProvisioningTemplateInput{Name: in.TemplateName, Description: in.Description, Body: in.TemplateBody,
		RoleArn: in.RoleArn, Type: in.Type, Enabled: in.Enabled, HookArn: in.Hook.arn()})
	if err != nil {
		return nil, err
	}
	return map[string]any{"templateArn": tpl.Arn, "templateName": tpl.Name, "defaultVersionId": tpl.DefaultVersion}, nil
}

type provisioningTemplateSummary struct {
	TemplateArn      string   `json:"templateArn"`
	TemplateName     string   `json:"templateName"`
	Description      string   `json:"description,omitempty"`
	CreationDate     *awsTime `json:"creationDate"`
	LastModifiedDate *awsTime `json:"lastModifiedDate"`
	Enabled          bool     `json:"enabled"`
	Type             string   `json:"type"`
}

func templateSummary(tpl *localiot.ProvisioningTemplate) provisioningTemplateSummary {
	return provisioningTemplateSummary{TemplateArn: tpl.Arn, TemplateName: tpl.Name, Description: tpl.Description,
		CreationDate: ptime(tpl.CreatedAt), LastModifiedDate: ptime(tpl.LastModified), Enabled: tpl.Enabled, Type: tpl.Type}
}

func (s api) handleDescribeProvisioningTemplate(r *http.Request) (any, error) {
	tpl, err := s.DescribeProvisioningTemplate(r.PathValue("templateName"))
	if err != nil {
		return nil, err
	}
	return &struct {
		provisioningTemplateSummary
		DefaultVersionID int    `json:"defaultVersionId"`
		TemplateBody     string `json:"templateBody"`
		RoleArn          string `json:"provisioningRoleArn"`
	}{templateSummary(tpl), tpl.DefaultVersion, tpl.Body(), tpl.RoleArn}, nil
}

func (s api) handleListProvisioningTemplates(r *http.Request) (any, error) {
	max, err := maxResults(r)
	if err != nil {
		return nil, err
	}
	if err := onlyQuery(r, "maxResults", "nextToken"); err != nil {
		return nil, err
	}
	tpls, next, err := s.ListProvisioningTemplates(max, r.URL.Query().Get("nextToken"))
	if err != nil {
		return nil, err
	}
	out := make([]provisioningTemplateSummary, 0, len(tpls))
	for _, tpl := range tpls {
		out = append(out, templateSummary(tpl))
	}
	return &struct {
		Templates []provisioningTemplateSummary `json:"templates"`
		NextToken string                        `json:"nextToken,omitempty"`
	}{out, next}, nil
}

func (s api) handleUpdateProvisioningTemplate(r *http.Request) (any, error) {
	var in struct {
		Description    *string           `json:"description"`
		Enabled        *bool             `json:"enabled"`
		DefaultVersion *int              `json:"defaultVersionId"`
		RoleArn        *string           `json:"provisioningRoleArn"`
		Hook           *provisioningHook `json:"preProvisioningHook"`
		RemoveHook     bool              `json:"removePreProvisioningHook"`
	}
	if err := readJSON(r, &in); err != nil {
		return nil, err
	}
	return struct{}{}, s.UpdateProvisioningTemplate(r.PathValue("templateName"), localiot.ProvisioningTemplateUpdate{
		Description: in.Description, Enabled: in.Enabled, DefaultVersion: in.DefaultVersion, RoleArn: in.RoleArn, HookArn: in.Hook.arn()})
}

func (s api) handleDeleteProvisioningTemplate(r *http.Request) (any, error) {
	return struct{}{}, s.DeleteProvisioningTemplate(r.PathValue("templateName"))
}

type templateVersionSummary struct {
	VersionID        int      `json:"versionId"`
	CreationDate     *awsTime `json:"creationDate"`
	IsDefaultVersion bool     `json:"isDefaultVersion"`
}

func (s api) handleCreateProvisioningTemplateVersion(r *http.Request) (any, error) {
	setDefault, err := queryBool(r, "setAsDefault")
	if err != nil {
		return nil, err
	}
	var in struct {
		TemplateBody string `json:"templateBody"`
	}
	if err := readJSON(r, &in); err != nil {
		return nil, err
	}
	tpl, v, err := s.CreateProvisioningTemplateVersion(r.PathValue("templateName"), in.TemplateBody, setDefault)
	if err != nil {
		return nil, err
	}
	return map[string]any{"templateArn": tpl.Arn, "templateName": tpl.Name, "versionId": v.ID, "isDefaultVersion": v.ID == tpl.DefaultVersion}, nil
}

func versionParam(r *http.Request) (int, error) {
	id, err := strconv.Atoi(r.PathValue("versionId"))
	if err != nil {
		return 0, localiot.Errorf(localiot.CodeInvalidRequest, "versionId %q is not a number", r.PathValue("versionId"))
	}
	return id, nil
}

func (s api) handleDescribeProvisioningTemplateVersion(r *http.Request) (any, error) {
	id, err := versionParam(r)
	if err != nil {
		return nil, err
	}
	tpl, v, err := s.ProvisioningTemplateVersion(r.PathValue("templateName"), id)
	if err != nil {
		return nil, err
	}
	return &struct {
		templateVersionSummary
		TemplateBody string `json:"templateBody"`
	}{templateVersionSummary{v.ID, ptime(v.CreatedAt), v.ID == tpl.DefaultVersion}, v.Body}, nil
}

func (s api) handleListProvisioningTemplateVersions(r *http.Request) (any, error) {
	max, err := maxResults(r)
	if err != nil {
		return nil, err
	}
	if err := onlyQuery(r, "maxResults", "nextToken"); err != nil {
		return nil, err
	}
	tpl, err := s.DescribeProvisioningTemplate(r.PathValue("templateName"))
	if err != nil {
		return nil, err
	}
	all := make([]templateVersionSummary, 0, len(tpl.Versions))
	for _, v := range tpl.Versions {
		all = append(all, templateVersionSummary{v.ID, ptime(v.CreatedAt), v.ID == tpl.DefaultVersion})
	}
	page, next, err := localiot.PageOf(all, max, r.URL.Query().Get("nextToken"), "nextToken")
	if err != nil {
		return nil, err
	}
	return &struct {
		Versions  []templateVersionSummary `json:"versions"`
		NextToken string                   `json:"nextToken,omitempty"`
	}{page, next}, nil
}

func (s api) handleDeleteProvisioningTemplateVersion(r *http.Request) (any, error) {
	id, err := versionParam(r)
	if err != nil {
		return nil, err
	}
	return struct{}{}, s.DeleteProvisioningTemplateVersion(r.PathValue("templateName"), id)
}

func (s api) handleRegisterCertificateWithoutCA(r *http.Request) (any, error) {
	var in struct {
		CertificatePem string `json:"certificatePem"`
		Status         string `json:"status"`
	}
	if err := readJSON(r, &in); err != nil {
		return nil, err
	}
	if in.CertificatePem == "" {
		return nil, localiot.Errorf(localiot.CodeInvalidRequest, "certificatePem is required")
	}
	c, err := s.RegisterCertificateWithoutCA(in.CertificatePem, in.Status)
	if err != nil {
		return nil, err
	}
	return &createCertificateResponse{CertificateArn: c.Arn, CertificateID: c.ID}, nil
}

func (s api) handleRegisterThing(r *http.Request) (any, error) {
	var in struct {
		TemplateBody string            `json:"templateBody"`
		Parameters   map[string]string `json:"parameters"`
	}
	if err := readJSON(r, &in); err != nil {
		return nil, err
	}
	if in.TemplateBody == "" {
		return nil, localiot.Errorf(localiot.CodeInvalidRequest, "templateBody is required")
	}
	pem, arns, err := s.RegisterThing(in.TemplateBody, in.Parameters)
	if err != nil {
		return nil, err
	}
	return map[string]any{"certificatePem": pem, "resourceArns": arns}, nil
}
