package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"
	"github.com/spf13/cobra"

	"github.com/otaflow/otaflow/internal/broker"
	"github.com/otaflow/otaflow/internal/cliconfig"
	"github.com/otaflow/otaflow/internal/iotclient"
	"github.com/otaflow/otaflow/internal/pki"
)

// deviceCertCmd gives a device its identity through the AWS IoT certificates API (the local
// jobs service, or AWS): a key made here, a certificate for it, attached to the thing.
func deviceCertCmd() *cobra.Command {
	var ic cliconfig.IoT
	var dataDir, thing, out, brokerHost string
	cmd := &cobra.Command{
		Use:   "device-cert",
		Short: "Give a device its certificate: a key made here, its certificate from the jobs service, attached to the thing",
		Long: `A device connects with a certificate that is registered with the jobs service, ACTIVE and
attached to its thing, as AWS IoT Core requires. This makes a key on this machine (it never
leaves it), has the jobs service sign a certificate for it (CreateCertificateFromCsr, ACTIVE;
the common name is the thing name, which mosquitto's ACL uses), registers the thing if it is
new and attaches the certificate to it (AttachThingPrincipal). It writes <thing>.crt and
<thing>.key (mode 0600) for the agent's --cert and --key. Revoke it with
'aws iot update-certificate --new-status REVOKED': the device is dropped at once.

With --broker-host it instead issues a broker's server certificate from the CA in
<data-dir>/pki (for mosquitto: server.crt, server.key, ca.pem).`,
		Example: "  starter device-cert --thing my-device --out /tmp/my-device\n  starter device-cert --broker-host mqtt.example.com --out deploy/certs   # mosquitto's server certificate",
		RunE: func(cmd *cobra.Command, _ []string) error {
			caFile := filepath.Join(dataDir, "pki", "ca.pem")
			if brokerHost != "" {
				return brokerCert(cmd, filepath.Join(dataDir, "pki"), out, brokerHost)
			}
			if !broker.ValidThingName(thing) {
				return fmt.Errorf("--thing %q is not a thing name (1-128 of a-z A-Z 0-9 : _ -)", thing)
			}
			if strings.HasPrefix(thing, broker.ReservedClientIDPrefix) {
				return fmt.Errorf("--thing %q: names starting with %s are the jobs service's; a device certificate must not carry one", thing, broker.ReservedClientIDPrefix)
			}
			ctx := cmd.Context()
			c, err := iotclient.ForCLI(ctx, &ic)
			if err != nil {
				return err
			}
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				return err
			}
			csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: thing}}, key)
			if err != nil {
				return err
			}
			if _, err := c.DescribeThing(ctx, &iot.DescribeThingInput{ThingName: aws.String(thing)}); err != nil {
				var missing *types.ResourceNotFoundException
				if !errors.As(err, &missing) {
					return fmt.Errorf("look up thing %s: %w", thing, err)
				}
				if _, err := c.CreateThing(ctx, &iot.CreateThingInput{ThingName: aws.String(thing)}); err != nil {
					return fmt.Errorf("register thing %s: %w", thing, err)
				}
			}
			created, err := c.CreateCertificateFromCsr(ctx, &iot.CreateCertificateFromCsrInput{
				CertificateSigningRequest: aws.String(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))), SetAsActive: true})
			if err != nil {
				return fmt.Errorf("have the jobs service sign the device's certificate: %w", err)
			}
			if _, err := c.AttachThingPrincipal(ctx, &iot.AttachThingPrincipalInput{ThingName: aws.String(thing), Principal: created.CertificateArn}); err != nil {
				return fmt.Errorf("attach certificate %s to thing %s: %w", aws.ToString(created.CertificateId), thing, err)
			}
			kder, err := x509.MarshalECPrivateKey(key)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(out, 0o700); err != nil {
				return err
			}
			certFile, keyFile := filepath.Join(out, thing+".crt"), filepath.Join(out, thing+".key")
			if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
				return err
			}
			if err := os.WriteFile(certFile, []byte(aws.ToString(created.CertificatePem)), 0o644); err != nil {
				return err
			}
			if outputJSON(cmd) {
				return json.NewEncoder(os.Stdout).Encode(map[string]string{"cert": certFile, "key": keyFile, "certificateId": aws.ToString(created.CertificateId), "certificateArn": aws.ToString(created.CertificateArn), "ca": caFile})
			}
			fmt.Fprintf(os.Stderr, "wrote %s and %s (secret): certificate %s, ACTIVE, attached to thing %s\n", certFile, keyFile, aws.ToString(created.CertificateId), thing)
			if _, err := os.Stat(caFile); err == nil {
				fmt.Fprintf(os.Stderr, "the local stack's broker CA (the agent's --ca) is %s\n", caFile)
			}
			return nil
		},
	}
	ic.Bind(cmd.Flags())
	cmd.Flags().StringVar(&dataDir, "data-dir", ".otaflow", "the local stack's data directory (its CA is in pki/: named for the agent's --ca, and used by --broker-host)")
	cmd.Flags().StringVar(&thing, "thing", "", "the thing the certificate is for (registered if new)")
	cmd.Flags().StringVar(&out, "out", ".", "directory to write the certificate and key to")
	cmd.Flags().StringVar(&brokerHost, "broker-host", "", "instead, issue the broker's server certificate for this host name or IP (server.crt, server.key, ca.pem: what deploy/mosquitto expects)")
	return cmd
}

// brokerCert issues a broker's server certificate from the CA in dir.
func brokerCert(cmd *cobra.Command, dir, out, host string) error {
	_, statErr := os.Stat(filepath.Join(dir, "ca.key"))
	ca, err := pki.Open(dir)
	if err != nil {
		return err
	}
	if statErr != nil {
		fmt.Fprintf(os.Stderr, "created a new CA in %s (keep ca.key secret)\n", dir)
	}
	cert, key, err := ca.IssueFiles(out, "server", true, host)
	if err != nil {
		return err
	}
	caOut := filepath.Join(out, "ca.pem")
	raw, err := os.ReadFile(ca.CertFile())
	if err == nil {
		err = os.WriteFile(caOut, raw, 0o644)
	}
	if err != nil {
		return err
	}
	if outputJSON(cmd) {
		return json.NewEncoder(os.Stdout).Encode(map[string]string{"cert": cert, "key": key, "ca": caOut})
	}
	fmt.Fprintf(os.Stderr, "wrote %s, %s (secret) and %s for a broker at %s\n", cert, key, caOut, host)
	return nil
}
