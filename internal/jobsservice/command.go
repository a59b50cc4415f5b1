// Package jobsservice is the jobs-service command: the local AWS IoT Jobs service on its own,
// on bbolt (one process) or PostgreSQL (replicas). It links no Temporal server, so the lean
// jobs-service binary and `starter jobs-service` share it.
package jobsservice

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"go.temporal.io/sdk/client"

	"github.com/otaflow/otaflow/internal/broker"
	"github.com/otaflow/otaflow/internal/cliconfig"
	"github.com/otaflow/otaflow/internal/console"
	"github.com/otaflow/otaflow/internal/greengrass"
	"github.com/otaflow/otaflow/internal/iotclient"
	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/localiot/mqttplane"
	"github.com/otaflow/otaflow/internal/localiot/rest"
	"github.com/otaflow/otaflow/internal/pki"
	"github.com/otaflow/otaflow/internal/release"
	"github.com/otaflow/otaflow/internal/rolloutapi"
	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/internal/rolloutops"
	"github.com/otaflow/otaflow/internal/temporalconf"
	"github.com/otaflow/otaflow/internal/tlog"
)

// Command is the jobs-service command.
func Command() *cobra.Command {
	var (
		dataDir, addr, brokerURL, mqttAddr                          string
		mqttUser, mqttPassword, region                              string
		accessKey, secretKey, logLevel, acct                        string
		publicURL                                                   string
		tlsAddr, tlsCert, tlsKey, tlsCA                             string
		plainDevices, noQuotas                                      bool
		postgresURL, artifactDir, clientID                          string
		shareGroup                                                  string
		consolePassword, temporalUI                                 string
		oidcIssuer, oidcClientID, oidcClientSecret, oidcGroupsClaim string
		oidcRoles                                                   []string
		restCert, restKey                                           string
		caDir, metricsAddr, crlFile, crlReload                      string
		releaseBuckets                                              []string
		maxConns                                                    int
		tc                                                          temporalconf.Temporal
	)
	cmd := &cobra.Command{
		Use:   "jobs-service",
		Short: "Run the local AWS IoT Jobs service on its own (REST control plane + MQTT Jobs API)",
		Long: `jobs-service serves the AWS IoT REST paths otaflow uses and answers devices on the MQTT Jobs
topics. With --broker it connects to an external broker (mosquitto, EMQX); without, it runs
the embedded broker on --mqtt-addr. State persists in --data-dir.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := cliconfig.Logger(logLevel, cmd.Flag("output") != nil && cmd.Flag("output").Value.String() == "json")
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
			if consolePassword != "" {
				if err := console.CheckPassword(consolePassword); err != nil {
					return fmt.Errorf("--console-password: %w", err)
				}
			}
			topts, err := tc.ClientOptions()
			if err != nil {
				return err
			}
			cliconfig.Describe(log, "jobs service", tc.Settings(), map[string]string{
				"dataDir": dataDir, "addr": addr, "broker": brokerURL, "mqttAddr": mqttAddr, "mqttUser": mqttUser,
				"mqttPassword": mqttPassword, "region": region, "accessKeyId": accessKey, "secretAccessKey": secretKey, "publicURL": publicURL,
				"postgres": redactURL(postgresURL), "artifactDir": artifactDir, "consolePassword": consolePassword,
				"oidcIssuer": oidcIssuer, "oidcClientId": oidcClientID, "oidcClientSecret": oidcClientSecret,
			})
			var sso *console.OIDC
			if oidcIssuer != "" {
				roles, err := console.ParseRoleMap(oidcRoles)
				if err != nil {
					return err
				}
				if oidcClientID == "" || len(roles) == 0 {
					return errors.New("--oidc-issuer needs --oidc-client-id (and usually --oidc-client-secret, OTAFLOW_OIDC_CLIENT_SECRET) and at least one --oidc-role GROUP=ROLE, or no one could sign in")
				}
				sso = &console.OIDC{Issuer: oidcIssuer, ClientID: oidcClientID, ClientSecret: oidcClientSecret, GroupsClaim: oidcGroupsClaim, Roles: roles}
			}
			if publicURL == "" {
				log.Warn().Msg("--public-url is not set: presigned artifact URLs name the listen address, which devices on other machines cannot reach; set it to the address devices use (OTAFLOW_PUBLIC_URL)")
			}
			if postgresURL != "" {
				// Replicas: each needs its own MQTT session, and each device request goes to one
				// of them: the leader's (a PostgreSQL lock), or with a shared subscription group
				// to any one.
				if !cmd.Flags().Changed("mqtt-client-id") {
					clientID = replicaClientID()
				}
				if artifactDir == "" {
					return errors.New("--artifact-dir is required with --postgres-url: every replica serves the same artifacts and TUF metadata, so point them all at one shared volume")
				}
			}
			var embedded *broker.Broker
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
				brokerURL, embedded = b.URL(), b
			}
			so := localiot.Options{Path: filepath.Join(dataDir, "jobs.db"), PostgresURL: postgresURL, ArtifactDir: artifactDir,
				Region: region, Account: acct, Logger: log, NoAWSQuotas: noQuotas}
			if caDir != "" {
				ca, err := pki.Load(caDir)
				if err != nil {
					return fmt.Errorf("--ca-dir: %w (it must hold the devices' CA, ca.pem and ca.key, the one the broker trusts)", err)
				}
				so.CA = ca
			}
			if crlFile != "" {
				if caDir == "" {
					return errors.New("--crl-file needs --ca-dir: the revocation list is signed by the devices' CA")
				}
				so.CRLFile, so.CRLReload = crlFile, strings.Fields(crlReload)
			}
			svc, err := localiot.Open(so)
			if err != nil {
				return err
			}
			defer svc.Close()
			if embedded != nil {
				// The embedded broker admits registered certificates as the registry says, and
				// drops the devices of one that stops being usable.
				svc.ServeBroker(embedded)
				svc.OnCertificateChange(func(id string) { embedded.DisconnectCertificate(id) })
			}
			if metricsAddr != "" {
				var extra []prometheus.Collector
				if embedded != nil {
					extra = append(extra, localiot.SessionsCollector(embedded.Sessions))
				}
				mln, err := net.Listen("tcp", metricsAddr)
				if err != nil {
					return fmt.Errorf("--metrics-addr %s: %w", metricsAddr, err)
				}
				msrv := &http.Server{Handler: localiot.MetricsHandler(svc, extra...), ReadHeaderTimeout: 10 * time.Second}
				go msrv.Serve(mln)
				defer msrv.Close()
				log.Info().Str("url", "http://"+mln.Addr().String()+"/metrics").Msg("Prometheus metrics served")
			}
			po := mqttplane.Options{BrokerURL: brokerURL, ClientID: clientID, SharedGroup: shareGroup,
				Exclusive: postgresURL != "" && shareGroup == "",
				Username:  mqttUser, Password: mqttPassword, Logger: log}
			if embedded != nil && !po.Exclusive && po.SharedGroup == "" {
				po.Inline = embedded // the broker is in this process: no connection to it
			}
			plane, err := mqttplane.Serve(svc, po)
			if err != nil {
				return err
			}
			defer plane.Close()
			// Greengrass CreateSoftwareUpdateJob starts rollouts, so it needs Temporal; the client
			// connects lazily, so the IoT API works while Temporal is still coming up.
			gg := &greengrass.Handler{Jobs: svc, Log: log}
			if len(releaseBuckets) > 0 {
				gg.Releases, gg.ReleaseBucket = greengrass.LocalReleases(svc, releaseBuckets[0]), releaseBuckets[0]
			}
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
			top := http.NewServeMux()
			srv, err := rest.NewServer(ln, top, rest.ServerOptions{MaxConnections: maxConns, CertFile: restCert, KeyFile: restKey})
			if err != nil {
				ln.Close()
				return err
			}
			if publicURL == "" {
				publicURL = srv.Scheme() + "://" + ln.Addr().String()
			}
			if srv.Scheme() == "http" {
				log.Warn().Msg("the REST API, artifacts, release metadata and console are served over plain HTTP: signed requests can be replayed for 5 minutes and the console password crosses in clear text; serve TLS with --tls-cert/--tls-key (or terminate TLS in front), and devices refuse plain HTTP outside development")
			}
			svc.SetBaseURL(publicURL)
			api := rest.Handler(svc, &rest.SigV4Verifier{Creds: rest.Credentials{AccessKeyID: accessKey, SecretAccessKey: secretKey}, Region: region},
				append(rolloutapi.Routes(c, tc.TaskQueue), rest.Route{Pattern: "POST /greengrass/updates", Action: "CreateSoftwareUpdateJob", Handler: gg})...)
			top.Handle("/", api)
			{
				// The console reads this very service (in process, signed like any client) and
				// steers rollouts through Temporal.
				const self = "http://jobs-service.in-process"
				hc := rest.InProcessClient(api)
				iotc, err := iotclient.NewIoT(cmd.Context(), iotclient.Config{Endpoint: self, Region: region, AccessKeyID: accessKey, SecretAccessKey: secretKey, HTTP: hc})
				if err != nil {
					return err
				}
				con := console.New(console.Options{Temporal: c, TaskQueue: tc.TaskQueue, IoT: iotc, TemporalUI: temporalUI, Namespace: tc.Namespace,
					Password: consolePassword, Users: svc, RequireSignIn: true, OIDC: sso, Audit: func(e localiot.AuditEntry) { svc.Audit(e) }, AuditLog: svc.AuditLog, Logger: log, ReleaseMetadataURL: rolloutops.MetadataURLs("", self), ReleaseBuckets: releaseBuckets,
					Shadows: &console.ShadowReader{Endpoint: self, Region: region, Credentials: credentials.NewStaticCredentialsProvider(accessKey, secretKey, ""), HTTP: hc}})
				if sso != nil {
					sso.RedirectURL = publicURL + "/console/api/oidc/callback"
					log.Info().Str("issuer", oidcIssuer).Str("redirect", sso.RedirectURL).Msg("console single sign-on: register this redirect URL with the provider")
				}
				top.Handle("/console/", con.Handler("/console/"))
				if consolePassword == "" {
					log.Info().Str("url", publicURL+"/console/").Msg("fleet console served: console users sign in (`starter access user add`); --console-password would also let the user admin")
				} else {
					log.Info().Str("url", publicURL+"/console/").Msg("fleet console served: sign in as admin with the console password, or as a console user")
				}
			}
			go srv.Serve()
			log.Info().Str("url", srv.Scheme()+"://"+ln.Addr().String()).Str("broker", brokerURL).Msg("jobs service ready")
			cliconfig.WaitForInterrupt()
			return srv.Close()
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", ".otaflow", "where the embedded jobs database (bbolt) lives")
	f.StringVar(&postgresURL, "postgres-url", "", "keep the jobs state in PostgreSQL (postgres://user:pass@host:5432/db) so that several replicas serve one fleet; empty uses bbolt in --data-dir")
	f.StringVar(&artifactDir, "artifact-dir", "", "artifacts and TUF metadata (default: --data-dir/artifacts; with --postgres-url, a volume every replica shares)")
	f.StringVar(&clientID, "mqtt-client-id", "otaflow-jobs-service", "the service's MQTT client ID (with --postgres-url: unique per replica by default)")
	f.StringVar(&shareGroup, "shared-subscription-group", "", "with --postgres-url: spread device requests over the replicas through the MQTT shared subscription $share/GROUP/… (EMQX, HiveMQ, the embedded broker; not Debian's mosquitto 2.0.11, which delivers no $aws topic to shared subscriptions); empty: the replica holding the leader's lease in PostgreSQL serves them, on any broker")
	f.StringVar(&addr, "jobs-addr", "127.0.0.1:4566", "REST listen address")
	f.StringVar(&brokerURL, "broker", "", "external MQTT broker URL; empty runs the embedded broker")
	f.StringVar(&mqttAddr, "mqtt-addr", cliconfig.DefaultMQTTAddr, "embedded broker's plain listen address (the service itself; devices only with --insecure-plain-devices)")
	f.StringVar(&tlsAddr, "mqtt-tls-addr", ":8883", "embedded broker's mutual-TLS listen address for devices")
	f.StringVar(&tlsCert, "mqtt-tls-cert", "", "embedded broker's server certificate (PEM)")
	f.StringVar(&tlsKey, "mqtt-tls-key", "", "its private key (PEM)")
	f.StringVar(&tlsCA, "mqtt-tls-ca", "", "CA that signs device certificates (PEM); a certificate's common name is the thing name")
	f.StringVar(&metricsAddr, "metrics-addr", "", "serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464; unauthenticated, so keep it on an internal address); empty: off")
	f.StringVar(&caDir, "ca-dir", "", "the devices' certificate authority (ca.pem and ca.key, the CA the broker trusts): the service then issues device certificates (CreateKeysAndCertificate, CreateCertificateFromCsr) and registers ones it signed; empty: it issues none")
	f.StringVar(&crlFile, "crl-file", "", "keep a certificate revocation list of the device certificates that may not connect (deactivated, revoked, deleted) at this path, for mosquitto's crlfile; rewritten at every change")
	f.StringVar(&crlReload, "crl-reload-command", "", "run this after each rewrite of --crl-file, e.g. 'pkill -HUP -x mosquitto' (mosquitto reads its crlfile again on SIGHUP)")
	f.BoolVar(&noQuotas, "no-aws-quotas", false, "lift the AWS IoT quotas the service enforces (thing groups per thing, status details, client tokens): what works then may fail on AWS")
	f.BoolVar(&plainDevices, "insecure-plain-devices", false, "let devices connect to the plain listener with their client ID as identity (trusted networks only)")
	f.StringVar(&mqttUser, "mqtt-user", cliconfig.DefaultMQTTServiceUser, "the service's MQTT user name")
	f.StringVar(&mqttPassword, "mqtt-password", "", "the service's MQTT password (required)")
	f.StringVar(&region, "region", cliconfig.DefaultRegion, "region in ARNs and signatures")
	f.StringVar(&acct, "account", "000000000000", "account ID in ARNs")
	f.StringVar(&accessKey, "access-key-id", "", "the access key clients sign with (required)")
	f.StringVar(&secretKey, "secret-access-key", "", "its secret (required)")
	f.StringVar(&logLevel, "log-level", "info", "log level")
	f.StringVar(&oidcIssuer, "oidc-issuer", "", "console single sign-on: the OpenID Connect provider's issuer URL (https://keycloak.example/realms/ops)")
	f.StringVar(&oidcClientID, "oidc-client-id", "", "the console's client ID at the provider")
	f.StringVar(&oidcClientSecret, "oidc-client-secret", "", "its client secret (OTAFLOW_OIDC_CLIENT_SECRET)")
	f.StringVar(&oidcGroupsClaim, "oidc-groups-claim", "groups", "the ID token claim that lists the user's groups")
	f.StringArrayVar(&oidcRoles, "oidc-role", nil, "map a provider group to a role: GROUP=ROLE (viewer, operator, release-manager, admin; repeatable)")
	f.StringVar(&consolePassword, "console-password", "", "the fleet console's password for the user admin (console users: `starter access user add`; empty: only they sign in)")
	f.StringSliceVar(&releaseBuckets, "release-buckets", []string{release.DefaultBucket}, "the buckets releases are published to, for the console's releases view; Greengrass CreateSoftwareUpdateJob installs the newest release published to the first")
	f.StringVar(&temporalUI, "temporal-ui-url", "", "the Temporal web UI's URL, for the console's links to rollout histories")
	f.StringVar(&restCert, "tls-cert", "", "serve the REST API, artifacts, release metadata and console over HTTPS with this certificate (PEM, with its chain)")
	f.StringVar(&restKey, "tls-key", "", "the private key of --tls-cert (PEM)")
	f.IntVar(&maxConns, "max-connections", rest.DefaultMaxConnections, "most concurrent REST connections; more wait to be accepted")
	f.StringVar(&publicURL, "public-url", "", "the address devices reach this service at, for presigned artifact URLs (default: the listen address)")
	for flag, env := range map[string]string{"data-dir": "OTAFLOW_DATA_DIR", "jobs-addr": "OTAFLOW_JOBS_ADDR", "broker": "OTAFLOW_BROKER",
		"mqtt-addr": "OTAFLOW_MQTT_ADDR", "mqtt-user": "OTAFLOW_MQTT_USER", "mqtt-password": "OTAFLOW_MQTT_PASSWORD", "region": "AWS_REGION",
		"account": "OTAFLOW_ACCOUNT", "access-key-id": "OTAFLOW_ACCESS_KEY_ID", "secret-access-key": "OTAFLOW_SECRET_ACCESS_KEY",
		"log-level": "OTAFLOW_LOG_LEVEL", "public-url": "OTAFLOW_PUBLIC_URL", "mqtt-tls-addr": "OTAFLOW_MQTT_TLS_ADDR",
		"mqtt-tls-cert": "OTAFLOW_MQTT_TLS_CERT", "mqtt-tls-key": "OTAFLOW_MQTT_TLS_KEY", "mqtt-tls-ca": "OTAFLOW_MQTT_TLS_CA", "ca-dir": "OTAFLOW_CA_DIR", "crl-file": "OTAFLOW_CRL_FILE", "crl-reload-command": "OTAFLOW_CRL_RELOAD_COMMAND", "metrics-addr": "OTAFLOW_METRICS_ADDR",
		"postgres-url": "OTAFLOW_POSTGRES_URL", "artifact-dir": "OTAFLOW_ARTIFACT_DIR", "mqtt-client-id": "OTAFLOW_MQTT_CLIENT_ID",
		"shared-subscription-group": "OTAFLOW_SHARED_SUBSCRIPTION_GROUP", "console-password": "OTAFLOW_CONSOLE_PASSWORD",
		"oidc-issuer": "OTAFLOW_OIDC_ISSUER", "oidc-client-id": "OTAFLOW_OIDC_CLIENT_ID", "oidc-client-secret": "OTAFLOW_OIDC_CLIENT_SECRET",
		"temporal-ui-url": "OTAFLOW_TEMPORAL_UI_URL", "tls-cert": "OTAFLOW_TLS_CERT", "tls-key": "OTAFLOW_TLS_KEY",
		"max-connections": "OTAFLOW_MAX_CONNECTIONS"} {
		cliconfig.Env(f, flag, env)
	}
	tc.Bind(f)
	cmd.AddCommand(healthcheckCmd())
	return cmd
}

// healthcheckCmd asks a running jobs service whether it is healthy: the container image's
// HEALTHCHECK (distroless images have no curl).
func healthcheckCmd() *cobra.Command {
	var url, caFile, serverName string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "healthcheck",
		Short: "Exit 0 when the jobs service at --url answers its health check, 1 otherwise",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c := &http.Client{Timeout: timeout}
			if caFile != "" || serverName != "" {
				cfg := &tls.Config{ServerName: serverName, MinVersion: tls.VersionTLS12}
				if caFile != "" {
					pem, err := os.ReadFile(caFile)
					if err != nil {
						return fmt.Errorf("--ca: %w", err)
					}
					cfg.RootCAs = x509.NewCertPool()
					if !cfg.RootCAs.AppendCertsFromPEM(pem) {
						return fmt.Errorf("--ca %s holds no PEM certificate", caFile)
					}
				}
				c.Transport = &http.Transport{TLSClientConfig: cfg}
			}
			resp, err := c.Get(url)
			if err != nil {
				return fmt.Errorf("jobs service health check %s: %w", url, err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("jobs service health check %s: %s", url, resp.Status)
			}
			fmt.Fprintln(cmd.OutOrStdout(), "ok")
			return nil
		},
	}
	cmd.Flags().StringVar(&url, "url", "http://127.0.0.1:4566/healthz", "the service's health URL")
	cmd.Flags().DurationVar(&timeout, "timeout", 3*time.Second, "give up after this long")
	cmd.Flags().StringVar(&caFile, "ca", "", "with an https:// --url: the CA (or the certificate itself) to trust")
	cmd.Flags().StringVar(&serverName, "server-name", "", "with an https:// --url on a loopback address: the name the certificate carries")
	return cmd
}

// replicaClientID is an MQTT client ID of this replica alone: a broker disconnects the older
// of two sessions with one ID.
func replicaClientID() string {
	host, _ := os.Hostname()
	b := make([]byte, 3)
	rand.Read(b)
	return fmt.Sprintf("otaflow-jobs-%s-%x", host, b)
}

// redactURL is u without its password, for logs.
func redactURL(u string) string {
	if u == "" {
		return ""
	}
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	return p.Redacted()
}
