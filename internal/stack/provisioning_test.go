package stack_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/agent"
	"github.com/otaflow/otaflow/internal/broker"
	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/internal/stack"
	"github.com/otaflow/otaflow/workflows/contract"
)

const factoryTemplate = `{
  "Parameters": {"SerialNumber": {"Type": "String"}, "Site": {"Type": "String", "Default": "berlin"},
                 "AWS::IoT::Certificate::Id": {"Type": "String"}},
  "Mappings": {"Sites": {"berlin": {"Group": "factory-berlin"}}},
  "Resources": {
    "thing": {"Type": "AWS::IoT::Thing", "Properties": {
      "ThingName": {"Fn::Join": ["", ["sensor-", {"Ref": "SerialNumber"}]]},
      "AttributePayload": {"serial": {"Ref": "SerialNumber"}, "site": {"Ref": "Site"}},
      "ThingGroups": [{"Fn::FindInMap": ["Sites", {"Ref": "Site"}, "Group"]}]}},
    "certificate": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "ACTIVE"}},
    "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "DevicePolicy"}}
  },
  "DeviceConfiguration": {"site": {"Ref": "Site"}}
}`

// claimConn connects to the stack's TLS listener with a claim certificate as clientID.
func claimConn(t *testing.T, s *stack.Stack, clientID string, cert tls.Certificate) (paho.Client, error) {
	c := paho.NewClient(paho.NewClientOptions().AddBroker(s.Broker.TLSURL()).SetClientID(clientID).SetAutoReconnect(false).
		SetConnectTimeout(5 * time.Second).SetTLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: s.CA.Pool(), MinVersion: tls.VersionTLS12}))
	tok := c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return nil, tok.Error()
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c, nil
}

// subscribed subscribes c to topic and reports whether the broker granted it.
func subscribed(t *testing.T, c paho.Client, topic string, got chan<- paho.Message) bool {
	tok := c.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) { got <- m })
	require.True(t, tok.WaitTimeout(10*time.Second))
	require.NoError(t, tok.Error())
	return tok.(*paho.SubscribeToken).Result()[topic] < 0x80
}

// Fleet provisioning by claim, end to end: templates and their versions through the AWS CLI;
// a claim certificate that can do nothing but provision (not the Jobs topics, not a thing's
// session), whose answers go only to the connection that asked; an agent that, given only the
// claim certificate, provisions its identity (thing, group, attributes, ACTIVE certificate),
// keeps it, connects as its thing and takes a rollout, installing for real.
func TestFleetProvisioningByClaim(t *testing.T) {
	ctx := context.Background()
	s, err := stack.Start(ctx, stack.Options{DataDir: t.TempDir(), InMemoryTemporal: true, UIPort: -1, Logger: testLogger()})
	require.NoError(t, err)
	defer s.Close()
	fleet, err := s.UseRealInstalls(ctx, "1.10.2", nil)
	require.NoError(t, err)
	iot := iotCLI(t, s.JobsURL)
	cliErr := func(want string, args ...string) {
		t.Helper()
		_, stderr, err := awsCLI(t, s.JobsURL, append([]string{"iot"}, args...)...)
		require.Error(t, err, "aws iot %v", args)
		require.Contains(t, string(stderr), want)
	}
	iot("create-thing-group", "--thing-group-name", "factory-berlin")
	dir := t.TempDir()
	body := filepath.Join(dir, "template.json")
	require.NoError(t, os.WriteFile(body, []byte(factoryTemplate), 0o644))
	role := "arn:aws:iam::000000000000:role/otaflow-provisioning"

	// Templates: created disabled (AWS's default), versions up to AWS's five.
	var created struct {
		TemplateArn      string
		DefaultVersionId int
	}
	require.NoError(t, json.Unmarshal([]byte(iot("create-provisioning-template", "--template-name", "factory", "--template-body", "file://"+body, "--provisioning-role-arn", role)), &created))
	require.Equal(t, 1, created.DefaultVersionId)
	require.Contains(t, created.TemplateArn, ":provisioningtemplate/factory")
	cliErr("ResourceAlreadyExistsException", "create-provisioning-template", "--template-name", "factory", "--template-body", "file://"+body, "--provisioning-role-arn", role)
	cliErr("InvalidRequestException", "create-provisioning-template", "--template-name", "bad", "--template-body", `{"Resources": {"x": {"Type": "AWS::S3::Bucket"}}}`, "--provisioning-role-arn", role)
	cliErr("preProvisioningHook", "create-provisioning-template", "--template-name", "hooked", "--template-body", "file://"+body, "--provisioning-role-arn", role,
		"--pre-provisioning-hook", "targetArn=arn:aws:lambda:us-east-1:000000000000:function:check")
	var described struct {
		TemplateName, TemplateBody string
		Enabled                    bool
		DefaultVersionId           int
	}
	require.NoError(t, json.Unmarshal([]byte(iot("describe-provisioning-template", "--template-name", "factory")), &described))
	require.False(t, described.Enabled)
	require.JSONEq(t, factoryTemplate, described.TemplateBody)
	for v := 2; v <= 5; v++ {
		iot("create-provisioning-template-version", "--template-name", "factory", "--template-body", "file://"+body)
	}
	cliErr("VersionsLimitExceededException", "create-provisioning-template-version", "--template-name", "factory", "--template-body", "file://"+body)
	cliErr("DeleteConflictException", "delete-provisioning-template-version", "--template-name", "factory", "--version-id", "1")
	iot("delete-provisioning-template-version", "--template-name", "factory", "--version-id", "5")
	iot("update-provisioning-template", "--template-name", "factory", "--default-version-id", "4")
	var versions struct {
		Versions []struct {
			VersionId        int
			IsDefaultVersion bool
		}
	}
	require.NoError(t, json.Unmarshal([]byte(iot("list-provisioning-template-versions", "--template-name", "factory")), &versions))
	require.Len(t, versions.Versions, 4)
	require.True(t, versions.Versions[3].IsDefaultVersion && versions.Versions[3].VersionId == 4)
	require.Contains(t, iot("describe-provisioning-template-version", "--template-name", "factory", "--version-id", "2"), "sensor-")
	require.Contains(t, iot("list-provisioning-templates"), `"templateName": "factory"`)

	// A claim certificate: registered and ACTIVE, attached to no thing.
	var claim struct {
		CertificateArn, CertificateId, CertificatePem string
		KeyPair                                       struct{ PrivateKey string }
	}
	require.NoError(t, json.Unmarshal([]byte(iot("create-keys-and-certificate", "--set-as-active")), &claim))
	claimPair, err := tls.X509KeyPair([]byte(claim.CertificatePem), []byte(claim.KeyPair.PrivateKey))
	require.NoError(t, err)

	// It may not take a thing's session, nor use any Jobs or shadow topic.
	iot("create-thing", "--thing-name", "existing-device")
	_, err = claimConn(t, s, "existing-device", claimPair)
	require.Error(t, err, "a claim certificate may not connect as a thing")
	a, err := claimConn(t, s, "claim-a", claimPair)
	require.NoError(t, err)
	got := make(chan paho.Message, 4)
	require.False(t, subscribed(t, a, "$aws/things/claim-a/jobs/notify-next", got), "a claim certificate may not use the Jobs topics")
	require.False(t, subscribed(t, a, "$aws/things/existing-device/shadow/get/accepted", got))

	// Its answers go to the connection that asked, never to another device with the same claim.
	b, err := claimConn(t, s, "claim-b", claimPair)
	require.NoError(t, err)
	gotA, gotB := make(chan paho.Message, 4), make(chan paho.Message, 4)
	require.True(t, subscribed(t, a, broker.TopicCreateCertificate+"/accepted", gotA))
	require.True(t, subscribed(t, b, broker.TopicCreateCertificate+"/accepted", gotB))
	require.True(t, subscribed(t, a, broker.ProvisionTopic("factory")+"/rejected", gotA))
	require.True(t, a.Publish(broker.TopicCreateCertificate, 1, false, "{}").WaitTimeout(10*time.Second))
	var keys struct {
		CertificateID string `json:"certificateId"`
		PrivateKey    string `json:"privateKey"`
		Token         string `json:"certificateOwnershipToken"`
	}
	select {
	case m := <-gotA:
		require.NoError(t, json.Unmarshal(m.Payload(), &keys))
	case <-time.After(10 * time.Second):
		t.Fatal("no answer to CreateKeysAndCertificate")
	}
	require.Contains(t, keys.PrivateKey, "PRIVATE KEY")
	select {
	case m := <-gotB:
		t.Fatalf("another claim device received the first one's keys: %s", m.Topic())
	case <-time.After(time.Second):
	}
	require.Contains(t, iot("describe-certificate", "--certificate-id", keys.CertificateID), "PENDING_ACTIVATION")

	// The template is disabled: provisioning is refused, and says how to turn it on.
	provision, _ := json.Marshal(map[string]any{"certificateOwnershipToken": keys.Token, "parameters": map[string]string{"SerialNumber": "0001"}})
	require.True(t, a.Publish(broker.ProvisionTopic("factory"), 1, false, provision).WaitTimeout(10*time.Second))
	select {
	case m := <-gotA:
		require.Equal(t, broker.ProvisionTopic("factory")+"/rejected", m.Topic())
		require.Contains(t, string(m.Payload()), "disabled")
	case <-time.After(10 * time.Second):
		t.Fatal("no answer to RegisterThing")
	}
	iot("update-provisioning-template", "--template-name", "factory", "--enabled")

	// An agent with only the claim certificate provisions itself, from a CSR.
	stateDir := t.TempDir()
	c := agent.Claim{BrokerURL: s.Broker.TLSURL(), TLS: &tls.Config{Certificates: []tls.Certificate{claimPair}, RootCAs: s.CA.Pool(), MinVersion: tls.VersionTLS12},
		Template: "factory", Parameters: map[string]string{"SerialNumber": "0042"}, Dir: filepath.Join(stateDir, "identity"), Logger: testLogger()}
	bad := c
	bad.Parameters = nil
	_, err = bad.LoadOrProvision(ctx)
	require.ErrorContains(t, err, "parameter SerialNumber is required")
	id, err := c.LoadOrProvision(ctx)
	require.NoError(t, err)
	require.Equal(t, "sensor-0042", id.Thing)
	require.Equal(t, map[string]any{"site": "berlin"}, id.DeviceConfiguration)
	info, err := os.Stat(id.KeyFile)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())
	require.Contains(t, iot("list-thing-groups-for-thing", "--thing-name", "sensor-0042"), "factory-berlin")
	require.Contains(t, iot("describe-thing", "--thing-name", "sensor-0042"), `"serial": "0042"`)
	var principals struct{ Principals []string }
	require.NoError(t, json.Unmarshal([]byte(iot("list-thing-principals", "--thing-name", "sensor-0042")), &principals))
	require.Len(t, principals.Principals, 1)
	require.NotEqual(t, claim.CertificateArn, principals.Principals[0], "its own certificate, not the claim")
	// Another claim device choosing the same serial cannot take sensor-0042's identity.
	thief := c
	thief.Dir = t.TempDir()
	_, err = thief.LoadOrProvision(ctx)
	require.ErrorContains(t, err, "a device provisioning from a claim cannot take an existing device's identity")
	again, err := c.LoadOrProvision(ctx)
	require.NoError(t, err)
	require.Equal(t, id, again, "provisioned once: the kept identity is used")
	require.NoError(t, json.Unmarshal([]byte(iot("list-thing-principals", "--thing-name", "sensor-0042")), &principals))
	require.Len(t, principals.Principals, 1)

	// Over MQTT by hand, with the first connection's token: accepted once, then refused.
	require.True(t, subscribed(t, a, broker.ProvisionTopic("factory")+"/accepted", gotA))
	for i, want := range []string{"/accepted", "/rejected"} {
		require.True(t, a.Publish(broker.ProvisionTopic("factory"), 1, false, provision).WaitTimeout(10*time.Second))
		select {
		case m := <-gotA:
			require.Equal(t, broker.ProvisionTopic("factory")+want, m.Topic(), "attempt %d: %s", i+1, m.Payload())
			if i == 1 {
				require.Contains(t, string(m.Payload()), "already used")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no answer to RegisterThing")
		}
	}
	require.Contains(t, iot("describe-certificate", "--certificate-id", keys.CertificateID), `"status": "ACTIVE"`)

	// The provisioned device connects as its thing and takes a rollout, for real.
	pair, err := tls.LoadX509KeyPair(id.CertFile, id.KeyFile)
	require.NoError(t, err)
	installer, err := s.DeviceInstaller(id.Thing)
	require.NoError(t, err)
	dev, err := agent.New(agent.Config{ThingName: id.Thing, BrokerURL: s.Broker.TLSURL(), StateDir: filepath.Join(stateDir, "state"),
		TLS:       &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: s.CA.Pool(), MinVersion: tls.VersionTLS12},
		Installer: installer, Logger: testLogger(), AgentVersion: "0.1.0"})
	require.NoError(t, err)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- dev.Run(runCtx) }()
	defer func() { stop(); <-done }()
	rel, err := fleet.Publish(ctx, "1.11.6", stack.HealthCheck("1.11.6", nil))
	require.NoError(t, err)
	var thing struct{ ThingArn string }
	require.NoError(t, json.Unmarshal([]byte(iot("describe-thing", "--thing-name", "sensor-0042")), &thing))
	req := request("provisioned-1", []string{thing.ThingArn})
	req.Artifact = rel.Artifact
	run, err := rolloutclient.Start(ctx, s.Client, contract.TaskQueue, req)
	require.NoError(t, err)
	res, err := rolloutclient.Result(ctx, run)
	require.NoError(t, err, res.Message)
	require.Equal(t, contract.StateSucceeded, res.State)
	require.Equal(t, "1.11.6", dev.InstalledVersion("core"))
}

// RegisterThing, the control plane's provisioning from a template: with a certificate
// registered here (CertificateId), or one the devices' CA signed elsewhere (CertificatePem),
// the thing is made, the certificate set ACTIVE and attached; a template naming a group that
// does not exist changes nothing.
func TestRegisterThingThroughAWSCLI(t *testing.T) {
	s := startStack(t)
	iot := iotCLI(t, s.JobsURL)
	dir := t.TempDir()
	body := filepath.Join(dir, "register.json")
	require.NoError(t, os.WriteFile(body, []byte(`{
  "Parameters": {"ThingName": {"Type": "String"}, "CertificateId": {"Type": "String"}},
  "Resources": {
    "thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "ThingName"}, "AttributePayload": {"line": "3"}}},
    "certificate": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificateId": {"Ref": "CertificateId"}, "Status": "ACTIVE"}}
  }
}`), 0o644))
	var keys struct{ CertificateArn, CertificateId string }
	require.NoError(t, json.Unmarshal([]byte(iot("create-keys-and-certificate")), &keys))
	var out struct {
		CertificatePem string
		ResourceArns   map[string]string
	}
	require.NoError(t, json.Unmarshal([]byte(iot("register-thing", "--template-body", "file://"+body, "--parameters", "ThingName=line-3-robot,CertificateId="+keys.CertificateId)), &out))
	require.Equal(t, keys.CertificateArn, out.ResourceArns["certificate"])
	require.Contains(t, out.ResourceArns["thing"], ":thing/line-3-robot")
	require.Contains(t, out.CertificatePem, "BEGIN CERTIFICATE")
	require.Contains(t, iot("describe-certificate", "--certificate-id", keys.CertificateId), `"status": "ACTIVE"`)
	require.Contains(t, iot("list-thing-principals", "--thing-name", "line-3-robot"), keys.CertificateArn)

	// A certificate made elsewhere by the devices' CA, registered by the template.
	certFile, _, err := s.CA.IssueFiles(dir, "line-3-arm", false)
	require.NoError(t, err)
	pemBody := filepath.Join(dir, "register-pem.json")
	require.NoError(t, os.WriteFile(pemBody, []byte(`{
  "Parameters": {"ThingName": {"Type": "String"}, "Pem": {"Type": "String"}},
  "Resources": {
    "thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "ThingName"}, "ThingGroups": ["no-such-group"]}},
    "certificate": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificatePem": {"Ref": "Pem"}}}
  }
}`), 0o644))
	pem, err := os.ReadFile(certFile)
	require.NoError(t, err)
	params, _ := json.Marshal(map[string]string{"ThingName": "line-3-arm", "Pem": string(pem)})
	paramsFile := filepath.Join(dir, "params.json")
	require.NoError(t, os.WriteFile(paramsFile, params, 0o644))
	_, stderr, err := awsCLI(t, s.JobsURL, "iot", "register-thing", "--template-body", "file://"+pemBody, "--parameters", "file://"+paramsFile)
	require.Error(t, err)
	require.Contains(t, string(stderr), "thing group no-such-group, which does not exist")
	_, stderr, err = awsCLI(t, s.JobsURL, "iot", "describe-thing", "--thing-name", "line-3-arm")
	require.Error(t, err, "nothing was made")
	require.Contains(t, string(stderr), "ResourceNotFoundException")
	require.NotContains(t, iot("list-certificates"), "INACTIVE", "nor was the certificate registered")
	iot("create-thing-group", "--thing-group-name", "no-such-group")
	require.NoError(t, json.Unmarshal([]byte(iot("register-thing", "--template-body", "file://"+pemBody, "--parameters", "file://"+paramsFile)), &out))
	require.Contains(t, iot("list-things-in-thing-group", "--thing-group-name", "no-such-group"), "line-3-arm")
	require.Contains(t, iot("list-thing-principals", "--thing-name", "line-3-arm"), out.ResourceArns["certificate"])
}
