package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/otaflow/otaflow/internal/broker"
	"github.com/otaflow/otaflow/internal/pki"
)

// deviceCertCmd issues a device certificate from the local stack's CA.
func deviceCertCmd() *cobra.Command {
	var dataDir, thing, out, brokerHost string
	cmd := &cobra.Command{
		Use:   "device-cert",
		Short: "Issue a device certificate from the local stack's CA (its common name is the thing name)",
		Long: `The local stack's broker (starter dev, starter demo) takes a device's identity from its
certificate on the mutual-TLS listener, as AWS IoT Core does: the certificate's common name is
the thing name, and the device may use only that thing's topics. This writes <thing>.crt and
<thing>.key (mode 0600) for the agent's --cert and --key; its --ca is <data-dir>/pki/ca.pem.`,
		Example: "  starter device-cert --thing my-device --out /tmp/my-device\n  starter device-cert --broker-host mqtt.example.com --out deploy/certs   # mosquitto's server certificate",
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir := filepath.Join(dataDir, "pki")
			_, statErr := os.Stat(filepath.Join(dir, "ca.key"))
			if statErr != nil && brokerHost == "" {
				// A device certificate from a CA the broker does not trust connects nowhere:
				// never make one silently.
				return fmt.Errorf("no CA in %s: a device certificate must come from the CA the broker trusts; give the stack's --data-dir (`starter dev` keeps its CA in <data-dir>/pki, default .otaflow), or make the broker's CA first with --broker-host", dir)
			}
			ca, err := pki.Open(dir)
			if err != nil {
				return err
			}
			if statErr != nil {
				fmt.Fprintf(os.Stderr, "created a new CA in %s (keep ca.key secret)\n", dir)
			}
			if brokerHost != "" {
				cert, key, err := ca.IssueFiles(out, "server", true, brokerHost)
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
				fmt.Fprintf(os.Stderr, "wrote %s, %s (secret) and %s for a broker at %s\n", cert, key, caOut, brokerHost)
				return nil
			}
			if !broker.ValidThingName(thing) {
				return fmt.Errorf("--thing %q is not a thing name (1-128 of a-z A-Z 0-9 : _ -)", thing)
			}
			if strings.HasPrefix(thing, broker.ReservedClientIDPrefix) {
				return fmt.Errorf("--thing %q: names starting with %s are the jobs service's; a device certificate must not carry one", thing, broker.ReservedClientIDPrefix)
			}
			cert, key, err := ca.IssueFiles(out, thing, false)
			if err != nil {
				return err
			}
			if outputJSON(cmd) {
				return json.NewEncoder(os.Stdout).Encode(map[string]string{"cert": cert, "key": key, "ca": ca.CertFile()})
			}
			fmt.Fprintf(os.Stderr, "wrote %s and %s (secret); the broker's CA is %s\n", cert, key, ca.CertFile())
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", ".otaflow", "the local stack's data directory (its CA is in pki/)")
	cmd.Flags().StringVar(&thing, "thing", "", "the thing name the certificate is for (required)")
	cmd.Flags().StringVar(&out, "out", ".", "directory to write the certificate and key to")
	cmd.Flags().StringVar(&brokerHost, "broker-host", "", "instead, issue the broker's server certificate for this host name or IP (server.crt, server.key, ca.pem: what deploy/mosquitto expects)")
	return cmd
}
