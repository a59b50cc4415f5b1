package localiot

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"time"

	"github.com/otaflow/otaflow/internal/broker"
	"github.com/otaflow/otaflow/internal/localiot/store"
)

// Fleet provisioning by claim, AWS IoT's device provisioning MQTT API: a device that holds
// only a claim certificate (an ACTIVE certificate attached to no thing, which the broker lets
// use these topics and nothing else) asks for a certificate of its own
// ($aws/certificates/create/json, or create-from-csr/json so its key never leaves it), then
// provisions itself from a template ($aws/provisioning-templates/{name}/provision/json) with
// the certificate ownership token it got. The answers go back on the connection that asked,
// never to another device (the broker delivers them; see broker.Provisioner).

const (
	recordOwnershipToken = "certificate-ownership-token"
	// CertPendingActivation is a certificate made over MQTT until a template activates it.
	CertPendingActivation = "PENDING_ACTIVATION"
	// OwnershipTokenTTL is how long a certificate ownership token may be used (AWS: one hour).
	OwnershipTokenTTL = time.Hour
)

type ownershipToken struct {
	CertificateID string    `json:"certificateId"`
	Expires       time.Time `json:"expires"`
	// Key is the record's key (the token's hash), for the sweep.
	Key string `json:"key"`
}

func tokenKey(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// newOwnershipToken records a token that proves its holder received certificate id.
func (s *Service) newOwnershipToken(id string) (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	token := hex.EncodeToString(b)
	err := s.st.Update(func(t store.Tx) error {
		return putRecord(t, recordOwnershipToken, tokenKey(token), &ownershipToken{CertificateID: id, Expires: s.Clock().Add(OwnershipTokenTTL), Key: tokenKey(token)})
	})
	return token, err
}

type provisioningError struct {
	StatusCode   int    `json:"statusCode"`
	ErrorCode    string `json:"errorCode"`
	ErrorMessage string `json:"errorMessage"`
}

// HandleProvisioningRequest answers one request of the device provisioning MQTT API from a
// device connected with a claim certificate (broker.Provisioner): accepted, or rejected with
// AWS's error shape.
func (s *Service) HandleProvisioningRequest(topic string, payload []byte) (replyTopic string, reply []byte) {
	accepted, err := s.provisioningRequest(topic, payload)
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			e = &Error{Code: CodeInternal, Message: err.Error()}
		}
		status := 400
		switch e.Code {
		case CodeResourceNotFound:
			status = 404
		case CodeAlreadyExists, CodeConflict, CodeCertificateState:
			status = 409
		case CodeInternal:
			status = 500
		}
		s.log.Warn().Str("topic", topic).Str("code", string(e.Code)).Msg("device provisioning refused: " + e.Message)
		raw, _ := json.Marshal(&provisioningError{StatusCode: status, ErrorCode: string(e.Code), ErrorMessage: e.Message})
		return topic + "/rejected", raw
	}
	raw, _ := json.Marshal(accepted)
	return topic + "/accepted", raw
}

func (s *Service) provisioningRequest(topic string, payload []byte) (any, error) {
	var in struct {
		CSR        string            `json:"certificateSigningRequest"`
		Token      string            `json:"certificateOwnershipToken"`
		Parameters map[string]string `json:"parameters"`
	}
	if len(payload) > 0 {
		if err := json.Unmarshal(payload, &in); err != nil {
			return nil, Errorf(CodeInvalidRequest, "the request is not JSON: %v", err)
		}
	}
	name, ok := broker.ProvisionTemplate(topic)
	switch {
	case !ok:
		return nil, Errorf(CodeInvalidRequest, "%s is not a device provisioning topic (%s, %s, %s)", topic, broker.TopicCreateCertificate, broker.TopicCreateCertificateFromCsr, broker.ProvisionTopic("{templateName}"))
	case topic == broker.TopicCreateCertificate:
		c, _, priv, err := s.createCertificate(nil, CertPendingActivation)
		if err != nil {
			return nil, err
		}
		token, err := s.newOwnershipToken(c.ID)
		return map[string]string{"certificateId": c.ID, "certificatePem": c.PEM, "privateKey": priv, "certificateOwnershipToken": token}, err
	case topic == broker.TopicCreateCertificateFromCsr:
		if in.CSR == "" {
			return nil, Errorf(CodeInvalidRequest, "certificateSigningRequest is required")
		}
		c, _, _, err := s.createCertificate([]byte(in.CSR), CertPendingActivation)
		if err != nil {
			return nil, err
		}
		token, err := s.newOwnershipToken(c.ID)
		return map[string]string{"certificateId": c.ID, "certificatePem": c.PEM, "certificateOwnershipToken": token}, err
	}
	if in.Token == "" {
		return nil, Errorf(CodeInvalidRequest, "certificateOwnershipToken is required: it is in the answer to %s or %s", broker.TopicCreateCertificate, broker.TopicCreateCertificateFromCsr)
	}
	thing, cfg, err := s.RegisterThingFromClaim(name, in.Token, in.Parameters)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		cfg = map[string]any{}
	}
	return map[string]any{"thingName": thing, "deviceConfiguration": cfg}, nil
}

// RegisterThingFromClaim provisions a device from a template: the thing, its groups and type,
// the certificate the token names activated (or not, as the template says) and attached. A
// token is used once. If a step fails, what was made for the device is undone.
func (s *Service) RegisterThingFromClaim(template, token string, params map[string]string) (string, map[string]any, error) {
	var tok *ownershipToken
	var tpl *ProvisioningTemplate
	err := s.st.Update(func(t store.Tx) error {
		var err error
		if tok, err = getRecord[ownershipToken](t, recordOwnershipToken, tokenKey(token)); err != nil {
			return err
		}
		if tok == nil {
			return Errorf(CodeInvalidRequest, "certificateOwnershipToken is not valid (unknown, or already used): ask for a new certificate (%s) and provision with the token it answers", broker.TopicCreateCertificateFromCsr)
		}
		if s.Clock().After(tok.Expires) {
			return Errorf(CodeInvalidRequest, "certificateOwnershipToken expired at %s: ask for a new certificate", tok.Expires.UTC().Format(time.RFC3339))
		}
		if tpl, err = mustProvisioningTemplate(t, template); err != nil {
			return err
		}
		if !tpl.Enabled {
			return Errorf(CodeInvalidRequest, "provisioning template %s is disabled (UpdateProvisioningTemplate --enabled turns it on)", tpl.Name)
		}
		return nil
	})
	if err != nil {
		return "", nil, err
	}
	body, err := parseTemplate(tpl.Body())
	if err != nil {
		return "", nil, err
	}
	given := maps.Clone(params)
	if given == nil {
		given = map[string]string{}
	}
	given[ParamCertificateID] = tok.CertificateID
	ev, err := newTemplateEval(body, given)
	if err != nil {
		return "", nil, err
	}
	p, err := ev.plan()
	if err != nil {
		return "", nil, err
	}
	if err := s.provision(p, tok.CertificateID, true); err != nil {
		return "", nil, err
	}
	s.st.Update(func(t store.Tx) error { return t.DeleteRecord(recordOwnershipToken, tokenKey(token)) })
	s.log.Info().Str("thing", p.ThingName).Str("template", tpl.Name).Str("certificate", tok.CertificateID).Msg("device provisioned itself from a claim")
	return p.ThingName, p.DeviceConfig, nil
}

// provision makes what a plan says for certificate certID, undoing it on failure. fromClaim:
// the certificate must be the one made for the device over MQTT, not yet provisioned.
func (s *Service) provision(p *provisionPlan, certID string, fromClaim bool) (err error) {
	if !p.HasThing {
		return Errorf(CodeInvalidRequest, "the template provisions no thing (%s): a device needs one to take updates", resourceThing)
	}
	if fromClaim && (!p.HasCert || p.CertificateID != certID) {
		return Errorf(CodeInvalidRequest, "the template's %s must be the device's new certificate: give CertificateId as {\"Ref\": %q}", resourceCertificate, ParamCertificateID)
	}
	for _, g := range p.Groups {
		if _, err := s.DescribeThingGroup(g); err != nil {
			return Errorf(CodeInvalidRequest, "the template puts devices in thing group %s, which does not exist: create it first (starter group add, or CreateThingGroup)", g)
		}
	}
	c, err := s.DescribeCertificate(certID)
	if err != nil {
		return err
	}
	if fromClaim && c.Status != CertPendingActivation {
		return Errorf(CodeCertificateState, "certificate %s is %s: only a certificate made for this device over MQTT, not yet provisioned, can be", c.ID, c.Status)
	}
	existing, err := s.DescribeThing(p.ThingName)
	var nf *Error
	if err != nil && !(errors.As(err, &nf) && nf.Code == CodeResourceNotFound) {
		return err
	}
	if fromClaim && existing != nil && len(existing.Principals) > 0 {
		// Whoever holds a claim certificate can choose the template's parameters, and with them
		// the thing's name: attaching its certificate to a device's thing would let it pose as
		// that device. (AWS leaves this to a pre-provisioning hook, which is not served here.)
		return Errorf(CodeAlreadyExists, "thing %s exists and has a certificate: a device provisioning from a claim cannot take an existing device's identity; to provision this device again, detach the old certificate first (DetachThingPrincipal)", existing.Name)
	}
	var undo []func()
	defer func() {
		if err != nil {
			for _, fn := range slices.Backward(undo) {
				fn()
			}
		}
	}()
	if existing == nil {
		if _, err = s.CreateTypedThing(p.ThingName, p.ThingType, p.Attributes); err != nil {
			return err
		}
		undo = append(undo, func() { s.DeleteThing(p.ThingName, 0) })
		for _, g := range p.Groups {
			if err = s.AddThingToThingGroup(g, p.ThingName); err != nil {
				return err
			}
		}
	} else if err = s.overrideThing(existing, p); err != nil {
		return err
	}
	if err = s.UpdateCertificate(certID, p.CertStatus); err != nil {
		return err
	}
	prev := c.Status
	if prev == CertPendingActivation {
		prev = CertInactive
	}
	undo = append(undo, func() { s.UpdateCertificate(certID, prev) })
	return s.AttachThingPrincipal(p.ThingName, c.Arn)
}

// overrideThing applies a template to a thing that exists, as its OverrideSettings say
// (DO_NOTHING unless told).
func (s *Service) overrideThing(th *store.Thing, p *provisionPlan) error {
	setting := func(k string) string {
		if v := p.Override[k]; v != "" {
			return v
		}
		return "DO_NOTHING"
	}
	groups, err := s.ThingGroupsForThing(th.Name)
	if err != nil {
		return err
	}
	want := slices.Sorted(slices.Values(p.Groups))
	differ := map[string]bool{
		"AttributePayload": !mapsEqual(th.Attributes, p.Attributes),
		"ThingTypeName":    th.TypeName != p.ThingType,
		"ThingGroups":      !slices.Equal(groups, want),
	}
	for _, k := range slices.Sorted(maps.Keys(differ)) {
		if differ[k] && setting(k) == "FAIL" {
			return Errorf(CodeAlreadyExists, "thing %s exists with another %s and the template's OverrideSettings say FAIL", th.Name, k)
		}
	}
	switch setting("AttributePayload") {
	case "REPLACE":
		err = s.UpdateThing(th.Name, p.Attributes, false, 0)
	case "MERGE":
		err = s.UpdateThing(th.Name, p.Attributes, true, 0)
	}
	if err != nil {
		return err
	}
	if ts := setting("ThingTypeName"); (ts == "REPLACE" || ts == "MERGE") && differ["ThingTypeName"] {
		if err := s.UpdateThing(th.Name, nil, true, 0, p.ThingType); err != nil {
			return err
		}
	}
	switch setting("ThingGroups") {
	case "REPLACE":
		for _, g := range groups {
			if !slices.Contains(want, g) {
				if err := s.RemoveThingFromThingGroup(g, th.Name); err != nil {
					return err
				}
			}
		}
		fallthrough
	case "MERGE":
		for _, g := range want {
			if !slices.Contains(groups, g) {
				if err := s.AddThingToThingGroup(g, th.Name); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// RegisterThing provisions a thing from a template body and parameters, as the control
// plane's RegisterThing: the template's certificate is one registered here (CertificateId) or
// is registered now (CertificatePem, signed by this service's device CA). It answers the
// certificate and the ARNs of what it provisioned.
func (s *Service) RegisterThing(body string, params map[string]string) (string, map[string]string, error) {
	if len(body) > maxTemplateBody {
		return "", nil, Errorf(CodeInvalidRequest, "templateBody is %d characters; the limit is %d", len(body), maxTemplateBody)
	}
	b, err := parseTemplate(body)
	if err != nil {
		return "", nil, err
	}
	ev, err := newTemplateEval(b, params)
	if err != nil {
		return "", nil, err
	}
	p, err := ev.plan()
	if err != nil {
		return "", nil, err
	}
	if !p.HasCert {
		return "", nil, Errorf(CodeInvalidRequest, "the template provisions no certificate (%s): a device needs one to connect", resourceCertificate)
	}
	var c *store.Certificate
	registered := false
	switch {
	case p.CertificatePem != "":
		cert, perr := parseCertificate(p.CertificatePem)
		if perr != nil {
			return "", nil, perr
		}
		if c, err = s.DescribeCertificate(CertificateID(cert.Raw)); err != nil {
			// Registered as INACTIVE: the template's status is applied with the rest.
			if c, err = s.RegisterCertificate(p.CertificatePem, p.CACertificatePem, CertInactive, false); err != nil {
				return "", nil, err
			}
			registered = true
		}
	case p.CertificateID != "":
		if c, err = s.DescribeCertificate(p.CertificateID); err != nil {
			return "", nil, err
		}
	}
	if c.Status == CertRevoked {
		return "", nil, Errorf(CodeCertificateState, "certificate %s is REVOKED", c.ID)
	}
	if err := s.provision(p, c.ID, false); err != nil {
		if registered {
			s.DeleteCertificate(c.ID) // as if never asked
		}
		return "", nil, err
	}
	arns := map[string]string{"thing": s.ThingArn(p.ThingName), "certificate": c.Arn}
	return c.PEM, arns, nil
}

// SweepClaims forgets what unfinished provisioning left behind: ownership tokens past their
// hour, and the certificates made over MQTT that no template activated within it (deleted, so
// they stay on the revocation list). The service runs it every minute.
func (s *Service) SweepClaims() {
	now := s.Clock()
	var stale []string
	err := s.st.Update(func(t store.Tx) error {
		stale = stale[:0]
		raws, err := t.Records(recordOwnershipToken)
		if err != nil {
			return err
		}
		for _, raw := range raws {
			var tok ownershipToken
			if json.Unmarshal(raw, &tok) != nil || tok.Key == "" || !now.After(tok.Expires) {
				continue
			}
			if err := t.DeleteRecord(recordOwnershipToken, tok.Key); err != nil {
				return err
			}
			// Its certificate, if no template activated it (a used token is deleted at once).
			if c, err := certificateIn(t, tok.CertificateID); err == nil && c != nil && c.Status == CertPendingActivation && len(c.Things) == 0 {
				stale = append(stale, c.ID)
			}
		}
		return nil
	})
	if err != nil {
		s.log.Warn().Err(err).Msg("sweeping expired provisioning claims failed; will retry")
		return
	}
	for _, id := range stale {
		if err := s.DeleteCertificate(id); err != nil {
			s.log.Warn().Err(err).Str("certificate", id).Msg("could not delete a certificate no device provisioned")
		}
	}
	if len(stale) > 0 {
		s.log.Info().Int("certificates", len(stale)).Msg("deleted certificates made for devices that never provisioned within the hour")
	}
}
