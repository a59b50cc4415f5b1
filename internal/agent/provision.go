package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"
)

// Fleet provisioning by claim (AWS IoT's device provisioning MQTT API): a device that leaves
// the factory with only a claim certificate makes its own key, gets a certificate for it
// ($aws/certificates/create-from-csr/json: the key never leaves the device), provisions its
// thing from a template ($aws/provisioning-templates/{name}/provision/json), and keeps the
// identity in its state directory. Every later start uses that identity; the claim
// certificate is not used again.

// Claim is what a device needs to provision itself.
type Claim struct {
	BrokerURL string
	// TLS carries the claim certificate and the broker's CA.
	TLS *tls.Config
	// ClientID is the claim connection's (default: provision-<random>); it must name no thing.
	ClientID   string
	Template   string
	Parameters map[string]string
	// Dir keeps the identity: thing.json, device.crt and device.key (mode 0600).
	Dir     string
	Timeout time.Duration
	Logger  zerolog.Logger
}

// Identity is a provisioned device's.
type Identity struct {
	Thing    string `json:"thingName"`
	CertFile string `json:"certFile"`
	KeyFile  string `json:"keyFile"`
	// DeviceConfiguration is what the template handed the device.
	DeviceConfiguration map[string]any `json:"deviceConfiguration,omitempty"`
}

const identityFile = "thing.json"

// LoadIdentity is the identity kept in dir, or nil if the device has not provisioned one.
func LoadIdentity(dir string) (*Identity, error) {
	raw, err := os.ReadFile(filepath.Join(dir, identityFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var id Identity
	if err := json.Unmarshal(raw, &id); err != nil || id.Thing == "" {
		return nil, fmt.Errorf("%s is damaged (%v): remove %s to provision the device again", filepath.Join(dir, identityFile), err, dir)
	}
	return &id, nil
}

// LoadOrProvision returns the identity kept in c.Dir, provisioning one first if there is none.
func (c Claim) LoadOrProvision(ctx context.Context) (*Identity, error) {
	if id, err := LoadIdentity(c.Dir); id != nil || err != nil {
		return id, err
	}
	if c.Template == "" {
		return nil, errors.New("--provisioning-template is required with a claim certificate: the template the device provisions itself from")
	}
	if c.ClientID == "" {
		b := make([]byte, 6)
		rand.Read(b)
		c.ClientID = "provision-" + hex.EncodeToString(b)
	}
	if c.Timeout == 0 {
		c.Timeout = 30 * time.Second
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: c.ClientID}}, key)
	if err != nil {
		return nil, err
	}
	c.Logger.Info().Str("template", c.Template).Str("clientId", c.ClientID).Msg("no identity yet: provisioning this device with its claim certificate")
	client := paho.NewClient(paho.NewClientOptions().AddBroker(c.BrokerURL).SetClientID(c.ClientID).SetTLSConfig(c.TLS).
		SetAutoReconnect(false).SetConnectTimeout(c.Timeout).SetCleanSession(true))
	if err := wait(client.Connect(), c.Timeout); err != nil {
		return nil, fmt.Errorf("connect to %s with the claim certificate: %w (the certificate must be registered and ACTIVE, attached to no thing)", c.BrokerURL, err)
	}
	defer client.Disconnect(250)

	var created struct {
		CertificateID  string `json:"certificateId"`
		CertificatePem string `json:"certificatePem"`
		Token          string `json:"certificateOwnershipToken"`
	}
	csrPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})
	if err := c.request(ctx, client, "$aws/certificates/create-from-csr/json", map[string]string{"certificateSigningRequest": string(csrPEM)}, &created); err != nil {
		return nil, fmt.Errorf("get a certificate for this device: %w", err)
	}
	var registered struct {
		Thing  string         `json:"thingName"`
		Config map[string]any `json:"deviceConfiguration"`
	}
	params := map[string]any{"certificateOwnershipToken": created.Token, "parameters": c.Parameters}
	if err := c.request(ctx, client, "$aws/provisioning-templates/"+c.Template+"/provision/json", params, &registered); err != nil {
		return nil, fmt.Errorf("provision this device from template %s: %w", c.Template, err)
	}
	if registered.Thing == "" {
		return nil, errors.New("the provisioning answer names no thing")
	}

	// Keep the identity: key and certificate first, the identity file last, so a power cut
	// leaves either no identity (the device provisions again) or a whole one.
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	id := &Identity{Thing: registered.Thing, CertFile: filepath.Join(c.Dir, "device.crt"), KeyFile: filepath.Join(c.Dir, "device.key"), DeviceConfiguration: registered.Config}
	raw, _ := json.MarshalIndent(id, "", "  ")
	for _, f := range []struct {
		path string
		data []byte
	}{
		{id.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})},
		{id.CertFile, []byte(created.CertificatePem)},
		{filepath.Join(c.Dir, identityFile), raw},
	} {
		if err := writeFileAtomic(f.path, f.data, true); err != nil {
			return nil, fmt.Errorf("keep the device's identity: %w", err)
		}
	}
	c.Logger.Info().Str("thing", id.Thing).Str("certificate", created.CertificateID).Str("dir", c.Dir).Msg("device provisioned; from now on it connects as its thing")
	return id, nil
}

// request publishes one provisioning request and waits for its accepted answer, which it
// decodes into out; a rejected answer is an error with AWS's code and message.
func (c Claim) request(ctx context.Context, client paho.Client, topic string, body, out any) error {
	answers := make(chan paho.Message, 2)
	handler := func(_ paho.Client, m paho.Message) {
		select {
		case answers <- m:
		default:
		}
	}
	accepted, rejected := topic+"/accepted", topic+"/rejected"
	// Subscribed before asking: the answer is delivered only to a connection that listens.
	if err := wait(client.SubscribeMultiple(map[string]byte{accepted: 1, rejected: 1}, handler), c.Timeout); err != nil {
		return fmt.Errorf("subscribe to %s: %w", accepted, err)
	}
	defer client.Unsubscribe(accepted, rejected)
	raw, err := json.Marshal(body)
	if err != nil {
		return err
	}
	if err := wait(client.Publish(topic, 1, false, raw), c.Timeout); err != nil {
		return fmt.Errorf("publish to %s: %w", topic, err)
	}
	timer := time.NewTimer(c.Timeout)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return fmt.Errorf("no answer on %s within %s", accepted, c.Timeout)
	case m := <-answers:
		if m.Topic() == rejected {
			var e struct {
				StatusCode int    `json:"statusCode"`
				Code       string `json:"errorCode"`
				Message    string `json:"errorMessage"`
			}
			json.Unmarshal(m.Payload(), &e)
			return fmt.Errorf("refused (%d %s): %s", e.StatusCode, e.Code, e.Message)
		}
		return json.Unmarshal(m.Payload(), out)
	}
}

func wait(t paho.Token, d time.Duration) error {
	if !t.WaitTimeout(d) {
		return fmt.Errorf("no answer within %s", d)
	}
	return t.Error()
}
