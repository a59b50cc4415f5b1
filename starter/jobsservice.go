package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/sdk/client"

	"github.com/otaflow/otaflow/internal/broker"
	"github.com/otaflow/otaflow/internal/cliconfig"
	"github.com/otaflow/otaflow/internal/greengrass"
	"github.com/otaflow/otaflow/internal/jobs"
	"github.com/otaflow/otaflow/internal/pki"
	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/internal/temporalconf"
	"github.com/otaflow/otaflow/internal/tlog"
)

func jobsServiceCmd() *cobra.Command {
	var (
		dataDir, addr, brokerURL, mqttAddr   string
		mqttUser, mqttPassword, region       string
		accessKey, secretKey, logLevel, acct string
		publicURL                            string
		tlsAddr, tlsCert, tlsKey, tlsCA      string
		plainDevices, noQuotas               bool
		tc                                   temporalconf.Temporal
	)
	cmd := &cobra.Command{
		Use:   "jobs-service",
		Short: "Run the local AWS IoT Jobs service on its own (REST control plane + MQTT Jobs API)",
		Long: `jobs-service serves the AWS IoT REST paths otaflow uses and answers devices on the MQTT Jobs
topics. With --broker it connects to an external broker (mosquitto, EMQX); without, it runs
the embedded broker on --mqtt-addr. State persists in --data-dir.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := cliconfig.Logger(logLevel, false)
			if err != nil {
				return err
			}
			if mqttPassword == "" {
				return errors.New("--mqtt-password (or OTAFLOW_MQTT_PASSWORD) is required: the broker admits the jobs service with it")
			}
			if accessKey == "" || secretKey == "" {
				return errors.New("--access-key-id and --secret-access-key (or OTAFLOW_ACCESS_KEY_ID, OTAFLOW_SECRET_ACCESS_KEY) are required: clients sign their requests with them; `starter dev` runs a local stack with development keys")
			}
			if secretKey == cliconfig.DefaultSecretKey {
				return fmt.Errorf("--secret-access-key is the development key every copy of otaflow knows (%s's documented default): anyone could sign requests and update every device; choose a secret of your own (`openssl rand -hex 32`)", "starter dev")
			}
			topts, err := tc.ClientOptions()
			if err != nil {
				return err
			}
			cliconfig.Describe(log, "jobs service", tc.Settings(), map[string]string{
				"dataDir": dataDir, "addr": addr, "broker": brokerURL, "mqttAddr": mqttAddr, "mqttUser": mqttUser,
				"mqttPassword": mqttPassword, "region": region, "accessKeyId": accessKey, "secretAccessKey": secretKey, "publicURL": publicURL,
			})
			if brokerURL == "" {
				bo := broker.Options{Addr: mqttAddr, ServiceUser: mqttUser, ServicePassword: mqttPassword, Logger: log}
				switch {
				case tlsCert != "" || tlsKey != "" || tlsCA != "":
					if bo.TLS, err = pki.ServerTLSFiles(tlsCert, tlsKey, tlsCA); err != nil {
						return err
					}
					bo.TLSAddr, bo.DevicesOnTLSOnly = tlsAddr, !plainDevices
				case !plainDevices:
					return errors.New("the embedded broker needs --mqtt-tls-cert, --mqtt-tls-key and --mqtt-tls-ca: devices prove who they are with certificates " +
						"(the CA's, common name = thing name; `starter device-cert` issues them from a local CA). " +
						"--insecure-plain-devices lets the client ID a device sends be its identity instead: only on a network where every client is trusted")
				}
				b, err := broker.Start(bo)
				if err != nil {
					return err
				}
				defer b.Close()
				brokerURL = b.URL()
			}
			svc, err := jobs.Open(jobs.Options{Path: filepath.Join(dataDir, "jobs.db"), Region: region, Account: acct, Logger: log, NoAWSQuotas: noQuotas})
			if err != nil {
				return err
			}
			defer svc.Close()
			plane, err := svc.ServeMQTT(jobs.MQTTOptions{BrokerURL: brokerURL, Username: mqttUser, Password: mqttPassword, Logger: log})
			if err != nil {
				return err
			}
			defer plane.Close()
			// Greengrass CreateSoftwareUpdateJob starts rollouts, so it needs Temporal; the client
			// connects lazily, so the IoT API works while Temporal is still coming up.
			gg := &greengrass.Handler{Jobs: svc, Log: log}
			topts.Logger = tlog.New(log)
			c, err := client.NewLazyClient(topts)
			if err != nil {
				return fmt.Errorf("temporal client for %s: %w", tc.Address, err)
			}
			defer c.Close()
			gg.Starter = rolloutclient.Starter{Client: c, TaskQueue: tc.TaskQueue}
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("jobs API cannot listen on %s: %w (choose another address with --jobs-addr)", addr, err)
			}
			if publicURL == "" {
				publicURL = "http://" + ln.Addr().String()
			}
			svc.SetBaseURL(publicURL)
			srv := &http.Server{
				Handler: svc.HTTPHandler(&jobs.SigV4Verifier{Creds: jobs.Credentials{AccessKeyID: accessKey, SecretAccessKey: secretKey}, Region: region},
					jobs.Route{Pattern: "POST /greengrass/updates", Handler: gg}),
				ReadHeaderTimeout: 10 * time.Second,
			}
			go srv.Serve(ln)
			log.Info().Str("url", "http://"+ln.Addr().String()).Str("broker", brokerURL).Msg("jobs service ready")
			waitForInterrupt()
			return srv.Close()
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", ".otaflow", "where the jobs database lives")
	f.StringVar(&addr, "jobs-addr", "127.0.0.1:4566", "REST listen address")
	f.StringVar(&brokerURL, "broker", "", "external MQTT broker URL; empty runs the embedded broker")
	f.StringVar(&mqttAddr, "mqtt-addr", cliconfig.DefaultMQTTAddr, "embedded broker's plain listen address (the service itself; devices only with --insecure-plain-devices)")
	f.StringVar(&tlsAddr, "mqtt-tls-addr", ":8883", "embedded broker's mutual-TLS listen address for devices")
	f.StringVar(&tlsCert, "mqtt-tls-cert", "", "embedded broker's server certificate (PEM)")
	f.StringVar(&tlsKey, "mqtt-tls-key", "", "its private key (PEM)")
	f.StringVar(&tlsCA, "mqtt-tls-ca", "", "CA that signs device certificates (PEM); a certificate's common name is the thing name")
	f.BoolVar(&noQuotas, "no-aws-quotas", false, "lift the AWS IoT quotas the service enforces (thing groups per thing, status details, client tokens): what works then may fail on AWS")
	f.BoolVar(&plainDevices, "insecure-plain-devices", false, "let devices connect to the plain listener with their client ID as identity (trusted networks only)")
	f.StringVar(&mqttUser, "mqtt-user", cliconfig.DefaultMQTTServiceUser, "the service's MQTT user name")
	f.StringVar(&mqttPassword, "mqtt-password", "", "the service's MQTT password (required)")
	f.StringVar(&region, "region", cliconfig.DefaultRegion, "region in ARNs and signatures")
	f.StringVar(&acct, "account", "000000000000", "account ID in ARNs")
	f.StringVar(&accessKey, "access-key-id", "", "the access key clients sign with (required)")
	f.StringVar(&secretKey, "secret-access-key", "", "its secret (required)")
	f.StringVar(&logLevel, "log-level", "info", "log level")
	f.StringVar(&publicURL, "public-url", "", "the address devices reach this service at, for presigned artifact URLs (default: the listen address)")
	for flag, env := range map[string]string{"data-dir": "OTAFLOW_DATA_DIR", "jobs-addr": "OTAFLOW_JOBS_ADDR", "broker": "OTAFLOW_BROKER",
		"mqtt-addr": "OTAFLOW_MQTT_ADDR", "mqtt-user": "OTAFLOW_MQTT_USER", "mqtt-password": "OTAFLOW_MQTT_PASSWORD", "region": "AWS_REGION",
		"account": "OTAFLOW_ACCOUNT", "access-key-id": "OTAFLOW_ACCESS_KEY_ID", "secret-access-key": "OTAFLOW_SECRET_ACCESS_KEY",
		"log-level": "OTAFLOW_LOG_LEVEL", "public-url": "OTAFLOW_PUBLIC_URL", "mqtt-tls-addr": "OTAFLOW_MQTT_TLS_ADDR",
		"mqtt-tls-cert": "OTAFLOW_MQTT_TLS_CERT", "mqtt-tls-key": "OTAFLOW_MQTT_TLS_KEY", "mqtt-tls-ca": "OTAFLOW_MQTT_TLS_CA"} {
		cliconfig.Env(f, flag, env)
	}
	tc.Bind(f)
	return cmd
}
