package stack_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"github.com/otaflow/otaflow/internal/cliconfig"
	"github.com/otaflow/otaflow/internal/devserver"
	"github.com/otaflow/otaflow/internal/faultnet"
	"github.com/otaflow/otaflow/internal/fleet"
	"github.com/otaflow/otaflow/internal/iotclient"
	"github.com/otaflow/otaflow/internal/mqtttest"
	"github.com/otaflow/otaflow/internal/pgtest"
	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/internal/rolloutworker"
	"github.com/otaflow/otaflow/internal/stack"
	"github.com/otaflow/otaflow/internal/tlog"
	"github.com/otaflow/otaflow/workflows/contract"
)

var (
	jobsServiceBinOnce sync.Once
	jobsServiceBin     string
	jobsServiceBinErr  error
)

// leanJobsService builds ./jobs-service, the production container's binary, once.
func leanJobsService(t *testing.T) string {
	jobsServiceBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "otaflow-jobs-service-")
		if err != nil {
			jobsServiceBinErr = err
			return
		}
		jobsServiceBin = filepath.Join(dir, "jobs-service")
		out, err := exec.Command("go", "build", "-o", jobsServiceBin, "../../jobs-service").CombinedOutput()
		if err != nil {
			jobsServiceBinErr = fmt.Errorf("go build ./jobs-service: %v: %s", err, out)
		}
	})
	require.NoError(t, jobsServiceBinErr)
	return jobsServiceBin
}

// replica is one jobs-service process.
type replica struct {
	t    *testing.T
	name string
	args []string
	env  []string
	cmd  *exec.Cmd
	done chan struct{}
	logs *lockedBuffer
	URL  string
	// ns, when set, is the network namespace the replica runs in (chaos_test.go).
	ns *faultnet.Namespace
}

func (r *replica) start() {
	r.t.Helper()
	r.cmd = exec.Command(leanJobsService(r.t), r.args...)
	if r.ns != nil {
		r.cmd = r.ns.Command(leanJobsService(r.t), r.args...)
	}
	r.cmd.Env = append(os.Environ(), r.env...)
	r.logs = &lockedBuffer{}
	r.cmd.Stdout, r.cmd.Stderr = r.logs, r.logs
	require.NoError(r.t, r.cmd.Start())
	r.done = make(chan struct{})
	go func() { r.cmd.Wait(); close(r.done) }()
	deadline := time.After(30 * time.Second)
	for !strings.Contains(r.logs.String(), `"jobs service ready"`) {
		select {
		case <-r.done:
			r.t.Fatalf("%s exited at start: %s", r.name, r.logs)
		case <-deadline:
			r.t.Fatalf("%s not ready after 30s: %s", r.name, r.logs)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (r *replica) kill() {
	r.cmd.Process.Signal(syscall.SIGKILL)
	<-r.done
}

// replicaArgs and replicaEnv are a jobs-service replica's command line and environment in the
// production-shape tests.
func replicaArgs(jobsDB, artifacts, brokerURL, addr, temporalAddr string) []string {
	return []string{"--postgres-url", jobsDB, "--artifact-dir", artifacts, "--broker", brokerURL, "--jobs-addr", addr,
		"--public-url", "http://" + addr, "--temporal-address", temporalAddr, "--log-level", "info"}
}

func replicaEnv(secret string) []string {
	return []string{"OTAFLOW_MQTT_USER=" + mqtttest.ServiceUser, "OTAFLOW_MQTT_PASSWORD=" + mqtttest.ServicePassword,
		"OTAFLOW_ACCESS_KEY_ID=" + cliconfig.DefaultAccessKeyID, "OTAFLOW_SECRET_ACCESS_KEY=" + secret}
}

// faultFleet starts simulated devices for things on broker's mutual-TLS listener, each install
// counted; a request that reached a replica that died is asked again after 5 s.
func faultFleet(t *testing.T, broker mqtttest.Broker, things []string) (*fleet.Fleet, *installCounter) {
	counter := newInstallCounter()
	f, err := fleet.Start(fleet.Options{BrokerURL: broker.DeviceURL, TLS: broker.CA.ClientTLS, Things: things, StateDir: t.TempDir(),
		InitialVersion: "1.0.0", InstallTime: 100 * time.Millisecond, OnStateChange: counter.observe,
		RequestTimeout: 5 * time.Second, IdleRecheck: 10 * time.Second, Logger: zerolog.Nop()})
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	require.NoError(t, f.WaitConnected(context.Background()))
	return f, counter
}

// workerProcess starts a worker process (TestWorkerChild) on a replica's REST API.
func workerProcess(t *testing.T, temporalAddr, jobsURL, secret string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run", "^TestWorkerChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), workerChildEnv+"=1", "WORKER_TEMPORAL="+temporalAddr, "WORKER_JOBS="+jobsURL, "WORKER_SECRET_KEY="+secret)
	require.NoError(t, cmd.Start())
	return cmd
}

// logOnFailure prints the replica's logs when the test fails.
func (r *replica) logOnFailure() {
	r.t.Cleanup(func() {
		if r.t.Failed() {
			r.t.Logf("%s logs:\n%s", r.name, r.logs)
		}
	})
}

// registerThings creates things device-0001 … device-n, returning their ARNs and names.
func registerThings(t *testing.T, iotc *iot.Client, n int) (arns, things []string) {
	for i := 1; i <= n; i++ {
		out, err := iotc.CreateThing(context.Background(), &iot.CreateThingInput{ThingName: aws.String(stack.Device(i))})
		require.NoError(t, err)
		arns, things = append(arns, aws.ToString(out.ThingArn)), append(things, aws.ToString(out.ThingName))
	}
	return arns, things
}

// lazyString is formatted when a failure message is printed, so it shows the last state seen.
type lazyString func() string

func (l lazyString) String() string { return l() }

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// TestProductionShape runs a rollout on the production topology: Temporal on PostgreSQL (its
// schema set up by Temporal's tool), two lean jobs-service replicas sharing one PostgreSQL
// database behind Debian's mosquitto with the shipped configuration (devices on mutual TLS),
// and two workers on one task queue. In wave 2 one worker and one replica are SIGKILLed, and
// started again two seconds later. The rollout succeeds with every device updated exactly
// once; the replicas' logs are JSON (not a terminal).
func TestProductionShape(t *testing.T) {
	ctx := context.Background()
	admin, err := url.Parse(pgtest.AdminURL(t))
	require.NoError(t, err)
	suffix := fmt.Sprint(os.Getpid())
	temporal, err := devserver.Start(ctx, devserver.Options{UIPort: -1, Logger: zerolog.Nop(),
		Postgres:         &devserver.Postgres{Addr: admin.Host, User: admin.User.Username(), Database: "prod_temporal_" + suffix, VisibilityDatabase: "prod_visibility_" + suffix},
		SearchAttributes: rolloutworker.SearchAttributes()})
	require.NoError(t, err)
	defer temporal.Stop()
	tc, err := client.Dial(client.Options{HostPort: temporal.FrontendAddr(), Logger: tlog.New(zerolog.Nop())})
	require.NoError(t, err)
	defer tc.Close()

	broker := mqtttest.Mosquitto(t)
	jobsDB, artifacts := pgtest.DB(t), t.TempDir()
	const secret = "production-shape-secret-key"
	const consolePassword = "production-console-password"
	replicas := make([]*replica, 2)
	for i := range replicas {
		addr := freeAddr(t)
		replicas[i] = &replica{t: t, name: fmt.Sprintf("replica-%d", i+1), URL: "http://" + addr,
			args: replicaArgs(jobsDB, artifacts, broker.URL, addr, temporal.FrontendAddr()),
			env:  append(replicaEnv(secret), "OTAFLOW_CONSOLE_PASSWORD="+consolePassword)}
		replicas[i].start()
		defer replicas[i].kill()
		replicas[i].logOnFailure()
	}
	out, err := exec.Command(leanJobsService(t), "healthcheck", "--url", replicas[0].URL+"/healthz").CombinedOutput()
	require.NoError(t, err, "the image's HEALTHCHECK: %s", out)
	out, err = exec.Command(leanJobsService(t), "healthcheck", "--url", "http://"+freeAddr(t)+"/healthz", "--timeout", "2s").CombinedOutput()
	require.Error(t, err, "nothing listens there")
	require.Contains(t, string(out), "health check")
	for _, r := range replicas {
		require.Contains(t, r.logs.String(), `"level":"info"`, "%s logs JSON when not on a terminal", r.name)
		require.NotContains(t, r.logs.String(), "\x1b[", "no colour codes in %s's logs", r.name)
		require.NotContains(t, r.logs.String(), secret, "no secret in %s's logs", r.name)
		require.NotContains(t, r.logs.String(), consolePassword, "no console password in %s's logs", r.name)
	}

	const n = 150
	iotc, err := iotclient.NewIoT(ctx, iotclient.Config{Endpoint: replicas[1].URL, Region: cliconfig.DefaultRegion,
		AccessKeyID: cliconfig.DefaultAccessKeyID, SecretAccessKey: secret})
	require.NoError(t, err)
	arns, things := registerThings(t, iotc, n)
	f, counter := faultFleet(t, broker, things)

	workers := make([]*exec.Cmd, 2)
	startWorker := func(i int) { workers[i] = workerProcess(t, temporal.FrontendAddr(), replicas[i].URL, secret) }
	for i := range workers {
		startWorker(i)
	}
	defer func() {
		for _, w := range workers {
			w.Process.Kill()
			w.Wait()
		}
	}()

	run, err := rolloutclient.Start(ctx, tc, contract.TaskQueue, faultRequest("production-shape", arns, 600))
	require.NoError(t, err)
	var last string
	require.Eventually(t, func() bool {
		st, err := rolloutclient.Status(ctx, tc, "production-shape")
		last = fmt.Sprintf("%+v %v", st, err)
		return err == nil && len(st.Waves) >= 2 && st.Counts.Succeeded > 20
	}, 2*time.Minute, 50*time.Millisecond, "wave 2 under way: %s", lazyString(func() string { return last }))
	// Kill the replica that serves the devices (the leader) and the worker that uses it.
	victim := 0
	if strings.Contains(replicas[1].logs.String(), leads) {
		victim = 1
	}
	require.NotContains(t, replicas[1-victim].logs.String(), leads, "one leader at a time")
	workers[victim].Process.Signal(syscall.SIGKILL)
	workers[victim].Wait()
	replicas[victim].kill()
	t.Logf("SIGKILLed %s (the leader) and its worker in wave 2", replicas[victim].name)
	// The dead leader's lease runs out up to 10 s after its last renewal (leaseTTL), and the
	// standby tries every second: a takeover comes 8 to 11 s after the kill, so 10 s was a coin
	// toss on when in the renewal cycle the kill fell. 20 s still fails a takeover that waits
	// for anything more than the lease.
	require.Eventually(t, func() bool { return strings.Contains(replicas[1-victim].logs.String(), leads) }, 20*time.Second, 20*time.Millisecond,
		"%s takes over the devices", replicas[1-victim].name)
	time.Sleep(2 * time.Second)
	replicas[victim].start()
	startWorker(victim)

	res, err := rolloutclient.Result(ctx, run)
	require.NoError(t, err, res.Message)
	require.Equal(t, contract.StateSucceeded, res.State, res.Message)
	require.Len(t, res.Waves, 3)
	counter.requireExactlyOnce(t, n, &res, func(th string) string { return f.InstalledVersion(th, "core") })

	// The console each replica serves: behind its password, with every device's inventory
	// (written by the agents through mosquitto's ACL into the shared database).
	resp, err := http.Get(replicas[0].URL + "/console/api/overview")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "the console needs its password")
	var overview struct {
		Versions map[string]map[string]int
		Rollouts []struct{ RolloutID, State string }
	}
	require.Eventually(t, func() bool {
		req, _ := http.NewRequest(http.MethodGet, replicas[1].URL+"/console/api/overview", nil)
		req.SetBasicAuth("admin", consolePassword) // the console password is the admin user's
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&overview) == nil && overview.Versions["core"][res.Version] == n
	}, 30*time.Second, 200*time.Millisecond, "the console shows all %d devices on %s: %+v", n, res.Version, lazyString(func() string { return fmt.Sprint(overview.Versions) }))
	require.NotEmpty(t, overview.Rollouts)
	require.Equal(t, "production-shape", overview.Rollouts[0].RolloutID)
	require.Equal(t, contract.StateSucceeded, overview.Rollouts[0].State)
}
