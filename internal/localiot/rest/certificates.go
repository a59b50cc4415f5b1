package rest

import (
	"cmp"
	"net/http"
	"slices"
	"strconv"

	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/localiot/store"
)

// The certificates API and thing principals (localiot/certificates.go).

// queryBool reads a boolean query parameter ("" is false).
func queryBool(r *http.Request, name string) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, localiot.Errorf(localiot.CodeInvalidRequest, "%s must be true or false, not %q", name, v)
	}
	return b, nil
}

type keyPair struct {
	PublicKey  string `json:"PublicKey"`
	PrivateKey string `json:"PrivateKey"`
}

type createCertificateResponse struct {
	CertificateArn string   `json:"certificateArn"`
	CertificateID  string   `json:"certificateId"`
	CertificatePem string   `json:"certificatePem,omitempty"`
	KeyPair        *keyPair `json:"keyPair,omitempty"`
}

func (s api) handleCreateKeysAndCertificate(r *http.Request) (any, error) {
	active, err := queryBool(r, "setAsActive")
	if err != nil {
		return nil, err
	}
	c, pub, priv, err := s.CreateKeysAndCertificate(active)
	if err != nil {
		return nil, err
	}
	return &createCertificateResponse{CertificateArn: c.Arn, CertificateID: c.ID, CertificatePem: c.PEM, KeyPair: &keyPair{PublicKey: pub, PrivateKey: priv}}, nil
}

func (s api) handleCreateCertificateFromCsr(r *http.Request) (any, error) {
	active, err := queryBool(r, "setAsActive")
	if err != nil {
		return nil, err
	}
	var in struct {
		CSR string `json:"certificateSigningRequest"`
	}
	if err := readJSON(r, &in); err != nil {
		return nil, err
	}
	if in.CSR == "" {
		return nil, localiot.Errorf(localiot.CodeInvalidRequest, "certificateSigningRequest is required")
	}
	c, err := s.CreateCertificateFromCsr(in.CSR, active)
	if err != nil {
		return nil, err
	}
	return &createCertificateResponse{CertificateArn: c.Arn, CertificateID: c.ID, CertificatePem: c.PEM}, nil
}

func (s api) handleRegisterCertificate(r *http.Request) (any, error) {
	active, err := queryBool(r, "setAsActive")
	if err != nil {
		return nil, err
	}
	var in struct {
		CertificatePem   string `json:"certificatePem"`
		CACertificatePem string `json:"caCertificatePem"`
		Status           string `json:"status"`
	}
	if err := readJSON(r, &in); err != nil {
		return nil, err
	}
	if in.CertificatePem == "" {
		return nil, localiot.Errorf(localiot.CodeInvalidRequest, "certificatePem is required")
	}
	c, err := s.RegisterCertificate(in.CertificatePem, in.CACertificatePem, in.Status, active)
	if err != nil {
		return nil, err
	}
	return &createCertificateResponse{CertificateArn: c.Arn, CertificateID: c.ID}, nil
}

type certificateValidity struct {
	NotBefore *awsTime `json:"notBefore,omitempty"`
	NotAfter  *awsTime `json:"notAfter,omitempty"`
}

type certificateDescription struct {
	CertificateArn   string              `json:"certificateArn"`
	CertificateID    string              `json:"certificateId"`
	Status           string              `json:"status"`
	CertificatePem   string              `json:"certificatePem"`
	OwnedBy          string              `json:"ownedBy"`
	CreationDate     *awsTime            `json:"creationDate,omitempty"`
	LastModifiedDate *awsTime            `json:"lastModifiedDate,omitempty"`
	CustomerVersion  int                 `json:"customerVersion"`
	GenerationID     string              `json:"generationId"`
	Validity         certificateValidity `json:"validity"`
	CertificateMode  string              `json:"certificateMode"`
}

func (s api) handleDescribeCertificate(r *http.Request) (any, error) {
	c, err := s.DescribeCertificate(r.PathValue("certificateId"))
	if err != nil {
		return nil, err
	}
	return &struct {
		Description certificateDescription `json:"certificateDescription"`
	}{certificateDescription{CertificateArn: c.Arn, CertificateID: c.ID, Status: c.Status, CertificatePem: c.PEM, OwnedBy: s.Account(),
		CreationDate: ptime(c.CreatedAt), LastModifiedDate: ptime(c.LastModified), CustomerVersion: c.Version, GenerationID: c.GenerationID,
		Validity: certificateValidity{NotBefore: ptime(c.NotBefore), NotAfter: ptime(c.NotAfter)}, CertificateMode: cmp.Or(c.Mode, localiot.ModeDefault)}}, nil
}

type certificateSummary struct {
	CertificateArn  string   `json:"certificateArn"`
	CertificateID   string   `json:"certificateId"`
	Status          string   `json:"status"`
	CertificateMode string   `json:"certificateMode"`
	CreationDate    *awsTime `json:"creationDate,omitempty"`
}

func (s api) handleListCertificates(r *http.Request) (any, error) {
	size := 0
	if v := r.URL.Query().Get("pageSize"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 250 {
			return nil, localiot.Errorf(localiot.CodeInvalidRequest, "pageSize must be a number from 1 to 250")
		}
		size = n
	}
	asc, err := queryBool(r, "isAscendingOrder")
	if err != nil {
		return nil, err
	}
	certs, next, err := s.ListCertificates(size, r.URL.Query().Get("marker"), asc)
	if err != nil {
		return nil, err
	}
	out := struct {
		Certificates []certificateSummary `json:"certificates"`
		NextMarker   string               `json:"nextMarker,omitempty"`
	}{Certificates: []certificateSummary{}, NextMarker: next}
	for _, c := range certs {
		out.Certificates = append(out.Certificates, summaryOf(c))
	}
	return &out, nil
}

func summaryOf(c *store.Certificate) certificateSummary {
	return certificateSummary{CertificateArn: c.Arn, CertificateID: c.ID, Status: c.Status, CertificateMode: cmp.Or(c.Mode, localiot.ModeDefault), CreationDate: ptime(c.CreatedAt)}
}

func (s api) handleUpdateCertificate(r *http.Request) (any, error) {
	status := r.URL.Query().Get("newStatus")
	if status == "" {
		return nil, localiot.Errorf(localiot.CodeInvalidRequest, "newStatus is required (ACTIVE, INACTIVE or REVOKED)")
	}
	return nil, s.UpdateCertificate(r.PathValue("certificateId"), status)
}

func (s api) handleDeleteCertificate(r *http.Request) (any, error) {
	if _, err := queryBool(r, "forceDelete"); err != nil {
		return nil, err
	}
	return nil, s.DeleteCertificate(r.PathValue("certificateId"))
}

// principalHeader is where AWS carries a principal's ARN in the thing-principal operations.
func principalHeader(r *http.Request) (string, error) {
	p := r.Header.Get("x-amzn-principal")
	if p == "" {
		return "", localiot.Errorf(localiot.CodeInvalidRequest, "the principal (header x-amzn-principal) is required: a certificate's ARN")
	}
	return p, nil
}

func (s api) handleAttachThingPrincipal(r *http.Request) (any, error) {
	p, err := principalHeader(r)
	if err != nil {
		return nil, err
	}
	return &empty{}, s.AttachThingPrincipal(r.PathValue("thingName"), p)
}

func (s api) handleDetachThingPrincipal(r *http.Request) (any, error) {
	p, err := principalHeader(r)
	if err != nil {
		return nil, err
	}
	return &empty{}, s.DetachThingPrincipal(r.PathValue("thingName"), p)
}

// namesPage is one page of names, as the other list operations page them: sorted, up to
// maxResults (default 25) after the nextToken handed out.
func namesPage(names []string, r *http.Request) ([]string, string, error) {
	max, err := maxResults(r)
	if err != nil {
		return nil, "", err
	}
	page, next := localiot.PageStrings(slices.Sorted(slices.Values(names)), cmp.Or(max, 25), r.URL.Query().Get("nextToken"))
	return append([]string{}, page...), next, nil
}

func (s api) handleListThingPrincipals(r *http.Request) (any, error) {
	ps, err := s.ListThingPrincipals(r.PathValue("thingName"))
	if err != nil {
		return nil, err
	}
	page, next, err := namesPage(ps, r)
	if err != nil {
		return nil, err
	}
	return &struct {
		Principals []string `json:"principals"`
		NextToken  string   `json:"nextToken,omitempty"`
	}{page, next}, nil
}

func (s api) handleListPrincipalThings(r *http.Request) (any, error) {
	p, err := principalHeader(r)
	if err != nil {
		return nil, err
	}
	things, err := s.ListPrincipalThings(p)
	if err != nil {
		return nil, err
	}
	page, next, err := namesPage(things, r)
	if err != nil {
		return nil, err
	}
	return &struct {
		Things    []string `json:"things"`
		NextToken string   `json:"nextToken,omitempty"`
	}{page, next}, nil
}
