package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/sdk/client"

	"github.com/otaflow/otaflow/internal/broker"
	"github.com/otaflow/otaflow/internal/cliconfig"
	"github.com/otaflow/otaflow/internal/greengrass"
	"github.com/otaflow/otaflow/internal/jobs"
	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/internal/tlog"
)

func jobsServiceCmd() *cobra.Command {
	var (
		dataDir, addr, brokerURL, mqttAddr   string
		mqttUser, mqttPassword, region       string
		accessKey, secretKey, logLevel, acct string
		publicURL                            string
		tc                                   cliconfig.Temporal
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
			cliconfig.Describe(log, "jobs service", map[string]string{
				"dataDir": dataDir, "addr": addr, "broker": brokerURL, "mqttAddr": mqttAddr, "mqttUser": mqttUser,
				"mqttPassword": mqttPassword, "region": region, "accessKeyId": accessKey, "secretAccessKey": secretKey,
			})
			if brokerURL == "" {
				b, err := broker.Start(broker.Options{Addr: mqttAddr, ServiceUser: mqttUser, ServicePassword: mqttPassword, Logger: log})
				if err != nil {
					return err
				}
				defer b.Close()
				brokerURL = b.URL()
			}
			svc, err := jobs.Open(jobs.Options{Path: filepath.Join(dataDir, "jobs.db"), Region: region, Account: acct, Logger: log})
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
			if tc.Address != "" {
				c, err := client.NewLazyClient(client.Options{HostPort: tc.Address, Namespace: tc.Namespace, Logger: tlog.New(log)})
				if err != nil {
					return fmt.Errorf("temporal client for %s: %w", tc.Address, err)
				}
				defer c.Close()
				gg.Starter = rolloutclient.Starter{Client: c, TaskQueue: tc.TaskQueue}
			}
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
	env := func(name, def string) string {
		if v := os.Getenv(name); v != "" {
			return v
		}
		return def
	}
	f.StringVar(&dataDir, "data-dir", env("OTAFLOW_DATA_DIR", ".otaflow"), "where the jobs database lives [OTAFLOW_DATA_DIR]")
	f.StringVar(&addr, "jobs-addr", env("OTAFLOW_JOBS_ADDR", "127.0.0.1:4566"), "REST listen address [OTAFLOW_JOBS_ADDR]")
	f.StringVar(&brokerURL, "broker", env("OTAFLOW_BROKER", ""), "external MQTT broker URL; empty runs the embedded broker [OTAFLOW_BROKER]")
	f.StringVar(&mqttAddr, "mqtt-addr", env("OTAFLOW_MQTT_ADDR", cliconfig.DefaultMQTTAddr), "embedded broker listen address [OTAFLOW_MQTT_ADDR]")
	f.StringVar(&mqttUser, "mqtt-user", env("OTAFLOW_MQTT_USER", cliconfig.DefaultMQTTServiceUser), "the service's MQTT user name [OTAFLOW_MQTT_USER]")
	f.StringVar(&mqttPassword, "mqtt-password", env("OTAFLOW_MQTT_PASSWORD", ""), "the service's MQTT password [OTAFLOW_MQTT_PASSWORD]")
	f.StringVar(&region, "region", env("AWS_REGION", cliconfig.DefaultRegion), "region in ARNs and signatures [AWS_REGION]")
	f.StringVar(&acct, "account", env("OTAFLOW_ACCOUNT", "000000000000"), "account ID in ARNs [OTAFLOW_ACCOUNT]")
	f.StringVar(&accessKey, "access-key-id", env("OTAFLOW_ACCESS_KEY_ID", cliconfig.DefaultAccessKeyID), "the access key clients sign with [OTAFLOW_ACCESS_KEY_ID]")
	f.StringVar(&secretKey, "secret-access-key", env("OTAFLOW_SECRET_ACCESS_KEY", cliconfig.DefaultSecretKey), "its secret [OTAFLOW_SECRET_ACCESS_KEY]")
	f.StringVar(&logLevel, "log-level", env("OTAFLOW_LOG_LEVEL", "info"), "log level [OTAFLOW_LOG_LEVEL]")
	f.StringVar(&publicURL, "public-url", env("OTAFLOW_PUBLIC_URL", ""), "the address devices reach this service at, for presigned artifact URLs (default: the listen address) [OTAFLOW_PUBLIC_URL]")
	tc.Bind(f)
	return cmd
}
