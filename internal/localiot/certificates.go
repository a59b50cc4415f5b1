package localiot

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/otaflow/otaflow/internal/arn"
	"github.com/otaflow/otaflow/internal/broker"
	"github.com/otaflow/otaflow/internal/localiot/store"
)

// Device identity as AWS IoT manages it: certificates (issued here from a key pair or a
// device's CSR, or registered when another CA of this service's signed them), their status
// (ACTIVE, INACTIVE, REVOKED), and thing principals (which certificates a thing may connect
// with). The broker asks CertificateDecision at each device connect, so a certificate that is
// deactivated or revoked stops working at once, and OnCertificateChange disconnects the
// devices using it.

const certificateKind = "certificate"

// Certificate statuses a caller may set (AWS's CertificateStatus; the transfer states are not
// served).
const (
	CertActive   = "ACTIVE"
	CertInactive = "INACTIVE"
	CertRevoked  = "REVOKED"
)

// Issuer signs device certificates (pki.CA).
type Issuer interface {
	IssueClient(cn string) (certPEM, publicPEM, privatePEM []byte, err error)
	SignCSR(csrPEM []byte) ([]byte, error)
	// Pool holds the CA certificate that signs them.
	Pool() *x509.CertPool
	// RevocationList signs a CRL naming these serial numbers.
	RevocationList(number int64, serials []*big.Int, nextUpdate time.Duration) ([]byte, error)
}

// CodeCertificateState is AWS's CertificateStateException; CodeDeleteConflict its
// DeleteConflictException.
const (
	CodeCertificateState      ErrorCode = "CertificateState"
	CodeDeleteConflict        ErrorCode = "DeleteConflict"
	CodeCertificateValidation ErrorCode = "CertificateValidation"
)

// CertificateID is AWS IoT's ID of a certificate: the SHA-256 of its DER, in hex.
func CertificateID(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// CertificateArn is the ARN of a certificate in this service's region and account.
func (s *Service) CertificateArn(id string) string {
	return arn.IoT(s.region, s.account, arn.TypeCert, id)
}

func (s *Service) issuer() (Issuer, error) {
	if s.ca == nil {
		return nil, Errorf(CodeInvalidRequest, "this jobs service issues no certificates: it was started without the devices' certificate authority (--ca-dir)")
	}
	return s.ca, nil
}

// CreateKeysAndCertificate makes a key pair and a certificate for it. The private key is in
// the answer only: the service keeps none.
func (s *Service) CreateKeysAndCertificate(setActive bool) (c *store.Certificate, publicPEM, privatePEM string, err error) {
	return s.createCertificate(nil, statusFor(setActive))
}

// CreateCertificateFromCsr signs a device's certificate signing request.
func (s *Service) CreateCertificateFromCsr(csrPEM string, setActive bool) (*store.Certificate, error) {
	c, _, _, err := s.createCertificate([]byte(csrPEM), statusFor(setActive))
	return c, err
}

// createCertificate issues a certificate from the devices' CA: for a CSR, or (csr nil) for a
// key pair made here, whose keys it returns.
func (s *Service) createCertificate(csr []byte, status string) (c *store.Certificate, publicPEM, privatePEM string, err error) {
	ca, err := s.issuer()
	if err != nil {
		return nil, "", "", err
	}
	var certPEM, pub, priv []byte
	if csr == nil {
		certPEM, pub, priv, err = ca.IssueClient("otaflow device certificate")
	} else if certPEM, err = ca.SignCSR(csr); err != nil {
		err = Errorf(CodeInvalidRequest, "certificateSigningRequest: %v", err)
	}
	if err != nil {
		return nil, "", "", err
	}
	c, err = s.addCertificate(string(certPEM), status, "")
	return c, string(pub), string(priv), err
}

// RegisterCertificate records a certificate that this service's CA signed (made elsewhere, by
// `starter device-cert` or a factory's tooling). status wins over setAsActive, as in AWS.
func (s *Service) RegisterCertificate(certPEM, caPEM, status string, setActive bool) (*store.Certificate, error) {
	if status == "" {
		status = statusFor(setActive)
	}
	if status != CertActive && status != CertInactive {
		return nil, Errorf(CodeInvalidRequest, "status %q: register a certificate as ACTIVE or INACTIVE", status)
	}
	cert, err := parseCertificate(certPEM)
	if err != nil {
		return nil, err
	}
	ca, err := s.issuer()
	if err != nil {
		return nil, err
	}
	if caPEM != "" {
		// The CA named must be one registered here: this service's device CA (RegisterCACertificate
		// for others is not served).
		given, err := parseCertificate(caPEM)
		if err != nil {
			return nil, Errorf(CodeCertificateValidation, "caCertificatePem: %s", strings.TrimPrefix(err.Error(), "certificatePem "))
		}
		if _, err := given.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return nil, Errorf(CodeCertificateValidation, "caCertificatePem names a CA that is not registered here (only this service's device CA is; RegisterCACertificate is not served): register the certificate without it, or issue one from this CA")
		}
		if err := cert.CheckSignatureFrom(given); err != nil {
			return nil, Errorf(CodeCertificateValidation, "the certificate was not signed by the CA in caCertificatePem (%v)", err)
		}
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, Errorf(CodeCertificateValidation, "the certificate is not one this service's device CA signed for a device (%v); only those can be registered here (registering other CAs, or certificates without one, is not served yet): issue it from this CA (`starter device-cert`, CreateKeysAndCertificate or CreateCertificateFromCsr)", err)
	}
	return s.addCertificate(certPEM, status, "")
}

// Certificate modes (AWS's CertificateMode).
const (
	ModeDefault = "DEFAULT"
	ModeSNIOnly = "SNI_ONLY"
)

// RegisterCertificateWithoutCA records a device certificate whatever signed it (a
// self-signed one, or one from a CA not registered here): the broker then admits exactly this
// certificate, without asking for a chain, once it is ACTIVE and attached to the thing.
func (s *Service) RegisterCertificateWithoutCA(certPEM, status string) (*store.Certificate, error) {
	if status == "" {
		status = CertActive
	}
	if status != CertActive && status != CertInactive {
		return nil, Errorf(CodeInvalidRequest, "status %q: register a certificate as ACTIVE or INACTIVE", status)
	}
	cert, err := parseCertificate(certPEM)
	if err != nil {
		return nil, err
	}
	now := s.Clock()
	if now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
		return nil, Errorf(CodeCertificateValidation, "the certificate is valid from %s to %s, not now", cert.NotBefore.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) && len(cert.ExtKeyUsage) > 0 {
		return nil, Errorf(CodeCertificateValidation, "the certificate's extended key usage does not allow client authentication")
	}
	return s.addCertificate(certPEM, status, ModeSNIOnly)
}

func statusFor(active bool) string {
	if active {
		return CertActive
	}
	return CertInactive
}

func parseCertificate(certPEM string) (*x509.Certificate, error) {
	block, _ := pem.Decode([]byte(certPEM))
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, Errorf(CodeCertificateValidation, "certificatePem is not a PEM certificate (-----BEGIN CERTIFICATE-----)")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, Errorf(CodeCertificateValidation, "certificatePem does not parse: %v", err)
	}
	return cert, nil
}

// addCertificate records a certificate; mode is ModeSNIOnly for one registered without a CA
// ("" otherwise).
func (s *Service) addCertificate(certPEM, status, mode string) (*store.Certificate, error) {
	cert, err := parseCertificate(certPEM)
	if err != nil {
		return nil, err
	}
	now := s.Clock()
	c := &store.Certificate{ID: CertificateID(cert.Raw), PEM: certPEM, Status: status, CreatedAt: now, LastModified: now,
		Version: 1, GenerationID: newGenerationID(), NotBefore: cert.NotBefore.UTC(), NotAfter: cert.NotAfter.UTC()}
	c.Arn = s.CertificateArn(c.ID)
	listed := false // on the revocation list before: a deleted certificate registered again
	c.Mode = mode
	err = s.st.Update(func(t store.Tx) error {
		if existing, err := t.Record(certificateKind, c.ID); err != nil || existing != nil {
			if existing != nil {
				return Errorf(CodeAlreadyExists, "certificate %s is already registered", c.ID)
			}
			return err
		}
		// A certificate deleted before: a revoked one stays revoked; an inactive one may come
		// back, and leaves the revocation list.
		serial := cert.SerialNumber.Text(16)
		if was, err := t.Record(deletedSerialKind, serial); err != nil {
			return err
		} else if was != nil {
			if strings.HasSuffix(string(was), ":"+CertRevoked) {
				return Errorf(CodeCertificateState, "certificate %s was revoked (and deleted): a revoked certificate cannot be used again; issue the device a new one", c.ID)
			}
			if err := t.DeleteRecord(deletedSerialKind, serial); err != nil {
				return err
			}
			listed = true
		}
		return putCertificate(t, c)
	})
	if err != nil {
		return nil, err
	}
	if c.Status != CertActive || listed {
		s.crlChanged(c.ID)
	}
	return c, nil
}

func newGenerationID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func putCertificate(t store.Tx, c *store.Certificate) error {
	raw, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return t.PutRecord(certificateKind, c.ID, raw)
}

func certificateIn(t store.Tx, id string) (*store.Certificate, error) {
	raw, err := t.Record(certificateKind, strings.ToLower(strings.TrimPrefix(id, "0x")))
	if err != nil || raw == nil {
		return nil, err
	}
	var c store.Certificate
	return &c, json.Unmarshal(raw, &c)
}

func mustCertificate(t store.Tx, id string) (*store.Certificate, error) {
	c, err := certificateIn(t, id)
	if err == nil && c == nil {
		err = Errorf(CodeResourceNotFound, "certificate %s does not exist", id)
	}
	return c, err
}

// DescribeCertificate is one certificate.
func (s *Service) DescribeCertificate(id string) (*store.Certificate, error) {
	var out *store.Certificate
	err := s.st.View(func(t store.Tx) (err error) {
		out, err = mustCertificate(t, id)
		return err
	})
	return out, err
}

// ListCertificates pages through certificates by creation date (newest first unless
// ascending); marker is where the last page ended.
func (s *Service) ListCertificates(pageSize int, marker string, ascending bool) ([]*store.Certificate, string, error) {
	if pageSize <= 0 || pageSize > 250 {
		pageSize = 25
	}
	var all []*store.Certificate
	err := s.st.View(func(t store.Tx) (err error) {
		all, err = allRecords[store.Certificate](t, certificateKind)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	sort.SliceStable(all, func(i, j int) bool {
		if !all[i].CreatedAt.Equal(all[j].CreatedAt) {
			return all[i].CreatedAt.Before(all[j].CreatedAt) == ascending
		}
		return all[i].ID < all[j].ID
	})
	return PageOf(all, pageSize, marker, "marker")
}

// UpdateCertificate sets a certificate's status. A revoked certificate stays revoked. Devices
// connected with a certificate that stops being ACTIVE are disconnected.
func (s *Service) UpdateCertificate(id, status string) error {
	switch status {
	case CertActive, CertInactive, CertRevoked:
	default:
		return Errorf(CodeInvalidRequest, "newStatus %q: use ACTIVE, INACTIVE or REVOKED", status)
	}
	var changed *store.Certificate
	err := s.st.Update(func(t store.Tx) error {
		changed = nil
		c, err := mustCertificate(t, id)
		if err != nil {
			return err
		}
		if c.Status == CertRevoked && status != CertRevoked {
			return Errorf(CodeCertificateState, "certificate %s is REVOKED: a revoked certificate cannot be used again; issue the device a new one", c.ID)
		}
		if c.Status == status {
			return nil
		}
		c.Status, c.LastModified, c.Version, c.GenerationID = status, s.Clock(), c.Version+1, newGenerationID()
		changed = c
		return putCertificate(t, c)
	})
	if err == nil && changed != nil {
		s.log.Info().Str("certificate", changed.ID).Str("status", status).Strs("things", changed.Things).Msg("certificate status changed")
		s.crlChanged(changed.ID)
		if status != CertActive {
			s.certificateChanged(changed)
		}
	}
	return err
}

// DeleteCertificate deletes an INACTIVE or REVOKED certificate attached to no thing. Its
// serial number stays on the revocation list: the devices' CA signed it, and a broker that
// goes by the list must go on refusing it.
func (s *Service) DeleteCertificate(id string) error {
	err := s.st.Update(func(t store.Tx) error {
		c, err := mustCertificate(t, id)
		if err != nil {
			return err
		}
		if c.Status == CertActive {
			return Errorf(CodeCertificateState, "certificate %s is ACTIVE; deactivate it (UpdateCertificate INACTIVE) before deleting it", c.ID)
		}
		if len(c.Things) > 0 {
			return Errorf(CodeDeleteConflict, "certificate %s is attached to %s; detach it (DetachThingPrincipal) first", c.ID, strings.Join(c.Things, ", "))
		}
		if c.Mode != ModeSNIOnly {
			cert, err := parseCertificate(c.PEM)
			if err != nil {
				return err
			}
			serial := cert.SerialNumber.Text(16)
			if err := t.PutRecord(deletedSerialKind, serial, []byte(serial+":"+c.Status)); err != nil {
				return err
			}
		}
		return t.DeleteRecord(certificateKind, c.ID)
	})
	if err == nil {
		s.crlChanged(id)
	}
	return err
}

// deletedSerialKind records the serial numbers of deleted certificates the devices' CA signed.
const deletedSerialKind = "deleted-certificate-serial"

// certificateOfPrincipal is the certificate a principal ARN names.
func certificateOfPrincipal(t store.Tx, principal string) (*store.Certificate, error) {
	a, err := arn.Parse(principal)
	if err != nil || a.Type != arn.TypeCert {
		return nil, Errorf(CodeInvalidRequest, "principal %q: give a certificate's ARN (arn:aws:iot:REGION:ACCOUNT:cert/ID)", principal)
	}
	return mustCertificate(t, a.Name)
}

// AttachThingPrincipal lets a thing connect with a certificate.
func (s *Service) AttachThingPrincipal(thing, principal string) error {
	return s.setPrincipal(thing, principal, true)
}

// DetachThingPrincipal stops it.
func (s *Service) DetachThingPrincipal(thing, principal string) error {
	return s.setPrincipal(thing, principal, false)
}

func (s *Service) setPrincipal(thing, principal string, attach bool) error {
	var detached *store.Certificate
	err := s.st.Update(func(t store.Tx) error {
		detached = nil
		th, err := mustThing(t, thing)
		if err != nil {
			return err
		}
		c, err := certificateOfPrincipal(t, principal)
		if err != nil {
			return err
		}
		has := slices.Contains(th.Principals, c.Arn)
		switch {
		case attach && !has:
			th.Principals = append(th.Principals, c.Arn)
			c.Things = append(c.Things, thing)
		case !attach && has:
			th.Principals = slices.DeleteFunc(th.Principals, func(p string) bool { return p == c.Arn })
			c.Things = slices.DeleteFunc(c.Things, func(n string) bool { return n == thing })
			detached = c
		default:
			return nil
		}
		if err := putCertificate(t, c); err != nil {
			return err
		}
		return t.PutThing(th)
	})
	if err == nil && detached != nil {
		s.certificateChanged(detached) // a device connected as thing with it no longer may be
	}
	return err
}

// ListThingPrincipals are the certificates attached to a thing.
func (s *Service) ListThingPrincipals(thing string) ([]string, error) {
	th, err := s.DescribeThing(thing)
	if err != nil {
		return nil, err
	}
	return slices.Clone(th.Principals), nil
}

// ListPrincipalThings are the things a certificate is attached to.
func (s *Service) ListPrincipalThings(principal string) ([]string, error) {
	var out []string
	err := s.st.View(func(t store.Tx) error {
		c, err := certificateOfPrincipal(t, principal)
		if err == nil {
			out = slices.Clone(c.Things)
		}
		return err
	})
	return out, err
}

// CertificateDecision says whether a device presenting cert may connect as clientID, as AWS
// IoT decides: the certificate must be registered here and ACTIVE, and attached to the thing;
// one attached to no thing is a claim certificate, which may connect under a client ID that
// names no thing (so it can take no device's session over) to provision a device, and nothing
// else. With clientID "", it only says whether cert is registered without a CA.
func (s *Service) CertificateDecision(cert *x509.Certificate, clientID string) broker.Admission {
	var c *store.Certificate
	var named *store.Thing
	if err := s.st.View(func(t store.Tx) (err error) {
		if c, err = certificateIn(t, CertificateID(cert.Raw)); err != nil || c == nil || clientID == "" {
			return err
		}
		named, err = t.Thing(clientID)
		return err
	}); err != nil {
		return broker.Admission{Reason: "the certificate registry could not be read: " + err.Error()}
	}
	switch {
	case c == nil:
		return broker.Admission{Reason: "the certificate is not registered with the jobs service: register it and attach it to the thing (starter device-cert does both; or RegisterCertificate and AttachThingPrincipal)"}
	case clientID == "":
		return broker.Admission{WithoutCA: c.Mode == ModeSNIOnly && c.Status == CertActive}
	case c.Status != CertActive:
		return broker.Admission{Reason: "certificate " + c.ID + " is " + c.Status}
	case len(c.Things) == 0 && named == nil:
		return broker.Admission{Allowed: true, Claim: true}
	case len(c.Things) == 0:
		return broker.Admission{Reason: "certificate " + c.ID + " is attached to no thing, so it is a claim certificate, and a claim certificate may not connect as thing " + clientID + " (AttachThingPrincipal attaches it)"}
	case !slices.Contains(c.Things, clientID):
		return broker.Admission{Reason: "certificate " + c.ID + " is not attached to thing " + clientID + " (AttachThingPrincipal)"}
	}
	return broker.Admission{Allowed: true}
}

// OnCertificateChange registers fn to be told when a certificate stops being usable by some
// thing (deactivated, revoked, or detached from a thing): the broker disconnects the devices
// using it.
func (s *Service) OnCertificateChange(fn func(id string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.certListeners = append(s.certListeners, fn)
}

// crlChanged rewrites the revocation list after a certificate's status changed.
func (s *Service) crlChanged(id string) {
	if err := s.WriteCRL(); err != nil {
		s.log.Error().Err(err).Str("file", s.crlFile).Str("certificate", id).Msg("the certificate revocation list could not be written: a broker that reads it still goes by the last one")
	}
}

func (s *Service) certificateChanged(c *store.Certificate) {
	s.mu.RLock()
	ls := slices.Clone(s.certListeners)
	s.mu.RUnlock()
	for _, fn := range ls {
		fn(c.ID)
	}
}

// ServeBroker makes an embedded broker admit devices as the certificate registry says and
// answer claim devices' provisioning requests.
func (s *Service) ServeBroker(b *broker.Broker) {
	b.SetCertificateCheck(s.CertificateDecision)
	b.SetProvisioner(s.HandleProvisioningRequest)
}

// crlValidity is how long a written CRL is valid: the service writes one at every start and
// every change, so a stale one (the service down for a week) is refused by the broker rather
// than trusted.
const crlValidity = 7 * 24 * time.Hour

// WriteCRL writes the certificate revocation list (Options.CRLFile), if one is kept: every
// certificate the devices' CA signed that is not ACTIVE. It replaces the file atomically and
// runs Options.CRLReload.
func (s *Service) WriteCRL() error {
	if s.crlFile == "" || s.ca == nil {
		return nil
	}
	s.crlMu.Lock()
	defer s.crlMu.Unlock()
	var serials []*big.Int
	err := s.st.View(func(t store.Tx) error {
		certs, err := allRecords[store.Certificate](t, certificateKind)
		if err != nil {
			return err
		}
		for _, c := range certs {
			if c.Status == CertActive || c.Mode == ModeSNIOnly {
				continue
			}
			cert, err := parseCertificate(c.PEM)
			if err != nil {
				return err
			}
			serials = append(serials, cert.SerialNumber)
		}
		deleted, err := t.Records(deletedSerialKind)
		for _, k := range deleted {
			serial, _, _ := strings.Cut(string(k), ":")
			if n, ok := new(big.Int).SetString(serial, 16); ok {
				serials = append(serials, n)
			}
		}
		return err
	})
	if err != nil {
		return err
	}
	crl, err := s.ca.RevocationList(time.Now().UnixMilli(), serials, crlValidity)
	if err != nil {
		return err
	}
	tmp := s.crlFile + ".tmp"
	if err := os.WriteFile(tmp, crl, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, s.crlFile); err != nil {
		return err
	}
	if len(s.crlReload) > 0 {
		if out, err := exec.Command(s.crlReload[0], s.crlReload[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("the CRL reload command %q failed: %v: %s", strings.Join(s.crlReload, " "), err, out)
		}
	}
	s.log.Info().Str("file", s.crlFile).Int("revoked", len(serials)).Msg("certificate revocation list written")
	return nil
}
