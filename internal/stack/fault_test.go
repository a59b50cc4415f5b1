package stack_test

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"github.com/otaflow/otaflow/internal/agent"
	"github.com/otaflow/otaflow/internal/cliconfig"
	"github.com/otaflow/otaflow/internal/fleet"
	"github.com/otaflow/otaflow/internal/iotclient"
	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/internal/rolloutops"
	"github.com/otaflow/otaflow/internal/rolloutworker"
	"github.com/otaflow/otaflow/internal/stack"
	"github.com/otaflow/otaflow/workflows/contract"
)

// installCounter counts, per device, how many times an install completed.
type installCounter struct {
	mu    sync.Mutex
	prev  map[string]string
	count map[string]int
}

func newInstallCounter() *installCounter {
	return &installCounter{prev: map[string]string{}, count: map[string]int{}}
}

func (c *installCounter) observe(thing string, st agent.State) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.Step == "installed" && c.prev[thing] != "installed" {
		c.count[thing]++
	}
	c.prev[thing] = string(st.Step)
}

// requireExactlyOnce checks that each of the n devices installed exactly once and that the
// rollout's counts agree with the devices' own state.
func (c *installCounter) requireExactlyOnce(t *testing.T, n int, res *contract.RolloutResult, version func(thing string) string) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	require.Equal(t, n, res.Counts.Succeeded, res.Message)
	for i := 1; i <= n; i++ {
		th := stack.Device(i)
		require.Equal(t, 1, c.count[th], "%s installed %d times", th, c.count[th])
		require.Equal(t, "2.0.0", version(th), th)
	}
}

// faultRequest is a 3-wave rollout paced by a rate limit, so faults land mid-rollout.
func faultRequest(id string, arns []string, perMinute int) contract.RolloutRequest {
	req := request(id, arns)
	setVersion(&req, "2.0.0")
	req.Waves = "10%,50%,100%"
	req.RateLimitPerMinute = perMinute
	req.PollInterval = 200 * time.Millisecond
	req.Timeout = 10 * time.Minute
	return req
}

const workerChildEnv = "OTAFLOW_WORKER_CHILD"

// TestWorkerChild is the worker process TestWorkerSIGKILLedTenTimes kills.
func TestWorkerChild(t *testing.T) {
	if os.Getenv(workerChildEnv) == "" {
		t.Skip("run by TestWorkerSIGKILLedTenTimes")
	}
	ctx := context.Background()
	c, err := client.DialContext(ctx, client.Options{HostPort: os.Getenv("WORKER_TEMPORAL"), Logger: nopTemporalLogger{}})
	if err != nil {
		fmt.Println("dial:", err)
		os.Exit(1)
	}
	iotc, err := iotclient.NewIoT(ctx, iotclient.Config{Endpoint: os.Getenv("WORKER_JOBS"), Region: cliconfig.DefaultRegion,
		AccessKeyID: cliconfig.DefaultAccessKeyID, SecretAccessKey: cmp.Or(os.Getenv("WORKER_SECRET_KEY"), cliconfig.DefaultSecretKey)})
	if err != nil {
		fmt.Println("iot:", err)
		os.Exit(1)
	}
	rolloutworker.Run(ctx, c, cliconfig.DefaultNamespace, contract.TaskQueue, &rolloutops.Ops{IoT: iotc}, zerolog.Nop())
}

// startChildWorker starts the only worker of s in a process of its own (TestWorkerChild),
// for tests that SIGKILL it.
func startChildWorker(t *testing.T, s *stack.Stack) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestWorkerChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), workerChildEnv+"=1", "WORKER_TEMPORAL="+s.Temporal.FrontendAddr(), "WORKER_JOBS="+s.JobsURL)
	require.NoError(t, cmd.Start())
	return cmd
}

type nopTemporalLogger struct{}

func (nopTemporalLogger) Debug(string, ...any) {}
func (nopTemporalLogger) Info(string, ...any)  {}
func (nopTemporalLogger) Warn(string, ...any)  {}
func (nopTemporalLogger) Error(string, ...any) {}

// TestWorkerSIGKILLedTenTimes runs a 200-device, 3-wave rollout with the only worker in its own
// process, SIGKILLs the worker at random moments ten times and starts a new one each time: the
// rollout completes, every device updated exactly once, and the counts match the devices.
func TestWorkerSIGKILLedTenTimes(t *testing.T) {
	ctx := context.Background()
	s, err := stack.Start(ctx, stack.Options{DataDir: t.TempDir(), InMemoryTemporal: true, UIPort: -1, NoWorker: true, Logger: testLogger()})
	require.NoError(t, err)
	defer s.Close()
	counter := newInstallCounter()
	arns, err := s.StartFleet(ctx, 200, fleet.Options{InitialVersion: "1.0.0", InstallTime: 100 * time.Millisecond, OnStateChange: counter.observe})
	require.NoError(t, err)

	startWorker := func() *exec.Cmd { return startChildWorker(t, s) }
	worker := startWorker()
	defer func() { worker.Process.Kill(); worker.Wait() }()
	run, err := rolloutclient.Start(ctx, s.Client, contract.TaskQueue, faultRequest("sigkill-worker", arns, 600))
	require.NoError(t, err)

	rng := rand.New(rand.NewPCG(1, 2))
	for kill := 1; kill <= 10; kill++ {
		time.Sleep(time.Duration(300+rng.IntN(900)) * time.Millisecond)
		st, err := rolloutclient.Status(ctx, s.Client, "sigkill-worker")
		require.NoError(t, err)
		require.NoError(t, worker.Process.Signal(syscall.SIGKILL))
		worker.Wait()
		t.Logf("kill %d: rollout %s, wave %d, %d succeeded", kill, st.State, len(st.Waves), st.Counts.Succeeded)
		worker = startWorker()
	}
	res, err := rolloutclient.Result(ctx, run)
	require.NoError(t, err, res.Message)
	require.Equal(t, contract.StateSucceeded, res.State)
	require.Len(t, res.Waves, 3)
	counter.requireExactlyOnce(t, 200, &res, func(th string) string { return agentVersion(s, th) })
}

func agentVersion(s *stack.Stack, thing string) string {
	for i, a := range s.Agents() {
		if stack.Device(i+1) == thing {
			return a.InstalledVersion("core")
		}
	}
	return ""
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

// TestTemporalAndJobsServiceRestartMidRollout stops the Temporal server (SQLite on disk), the
// jobs service, the broker and the worker in the middle of a 200-device rollout and starts
// them again from the same files; the devices, in their own fleet, reconnect. The rollout
// completes with every device updated exactly once.
func TestTemporalAndJobsServiceRestartMidRollout(t *testing.T) {
	ctx := context.Background()
	opts := stack.Options{DataDir: t.TempDir(), UIPort: -1, MQTTAddr: freeAddr(t), JobsAddr: freeAddr(t), Logger: testLogger()}
	s, err := stack.Start(ctx, opts)
	require.NoError(t, err)
	var arns, things []string
	for i := 1; i <= 200; i++ {
		th, err := s.Jobs.CreateThing(stack.Device(i), nil)
		require.NoError(t, err)
		arns, things = append(arns, th.Arn), append(things, th.Name)
	}
	counter := newInstallCounter()
	f, err := fleet.Start(fleet.Options{BrokerURL: "tcp://" + opts.MQTTAddr, Things: things, StateDir: t.TempDir(), InitialVersion: "1.0.0",
		InstallTime: 100 * time.Millisecond, OnStateChange: counter.observe, Logger: zerolog.Nop()})
	require.NoError(t, err)
	defer f.Close()
	run, err := rolloutclient.Start(ctx, s.Client, contract.TaskQueue, faultRequest("restart-all", arns, 1000))
	require.NoError(t, err)

	require.Eventually(t, func() bool {
		st, err := rolloutclient.Status(ctx, s.Client, "restart-all")
		return err == nil && len(st.Waves) >= 2 && st.Counts.Succeeded > 30
	}, time.Minute, 50*time.Millisecond, "wave 2 under way")
	s.Close()
	time.Sleep(time.Second)
	s, err = stack.Start(ctx, opts)
	require.NoError(t, err)
	defer s.Close()

	res, err := rolloutclient.Result(ctx, s.Client.GetWorkflow(ctx, run.GetID(), run.GetRunID()))
	require.NoError(t, err, res.Message)
	require.Equal(t, contract.StateSucceeded, res.State)
	counter.requireExactlyOnce(t, 200, &res, func(th string) string { return f.InstalledVersion(th, "core") })
}

// TestBrokerDownTenSeconds drops the MQTT broker for 10 s in the middle of a rollout whose
// devices have a 2-minute in-progress timeout: devices and the jobs service reconnect, no
// execution is lost, and nothing times out.
func TestBrokerDownTenSeconds(t *testing.T) {
	ctx := context.Background()
	s, err := stack.Start(ctx, stack.Options{DataDir: t.TempDir(), InMemoryTemporal: true, UIPort: -1, Logger: testLogger()})
	require.NoError(t, err)
	defer s.Close()
	counter := newInstallCounter()
	arns, err := s.StartFleet(ctx, 100, fleet.Options{InitialVersion: "1.0.0", InstallTime: 100 * time.Millisecond, OnStateChange: counter.observe})
	require.NoError(t, err)
	req := faultRequest("broker-drop", arns, 600)
	req.DeviceTimeout = 2 * time.Minute
	run, err := rolloutclient.Start(ctx, s.Client, contract.TaskQueue, req)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		st, err := rolloutclient.Status(ctx, s.Client, "broker-drop")
		return err == nil && len(st.Waves) >= 2 && st.Counts.Succeeded > 15
	}, time.Minute, 50*time.Millisecond)
	s.StopBroker()
	time.Sleep(10 * time.Second)
	require.NoError(t, s.StartBroker())

	res, err := rolloutclient.Result(ctx, run)
	require.NoError(t, err, res.Message)
	require.Equal(t, contract.StateSucceeded, res.State)
	require.Zero(t, res.Counts.TimedOut)
	counter.requireExactlyOnce(t, 100, &res, func(th string) string { return agentVersion(s, th) })
}

// TestMalformedFloodDuringRollout floods the broker with malformed Jobs API requests and
// oversize payloads from rogue devices, and the REST API with oversize and malformed job
// documents, while a rollout runs: the rollout is unaffected and the service's heap stays
// bounded.
func TestMalformedFloodDuringRollout(t *testing.T) {
	ctx := context.Background()
	s, err := stack.Start(ctx, stack.Options{DataDir: t.TempDir(), InMemoryTemporal: true, UIPort: -1, Logger: testLogger()})
	require.NoError(t, err)
	defer s.Close()
	counter := newInstallCounter()
	// Under the flood the broker may drop a notification; devices that look again on their
	// own within the rollout's time finish anyway.
	arns, err := s.StartFleet(ctx, 100, fleet.Options{InitialVersion: "1.0.0", InstallTime: 50 * time.Millisecond, OnStateChange: counter.observe,
		IdleRecheck: 20 * time.Second})
	require.NoError(t, err)
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	run, err := rolloutclient.Start(ctx, s.Client, contract.TaskQueue, faultRequest("flood", arns, 1000))
	require.NoError(t, err)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sent, refused sync.Map
	for r := 1; r <= 5; r++ {
		rogue := fmt.Sprintf("rogue-%d", r)
		_, err := s.Jobs.CreateThing(rogue, nil)
		require.NoError(t, err)
		wg.Add(1)
		go func() {
			defer wg.Done()
			junk := [][]byte{[]byte("{"), []byte(`{"status":42}`), []byte(`{"clientToken":` + strings.Repeat("[", 5000) + `}`),
				bytes.Repeat([]byte("A"), 100<<10), []byte(`{"status":"SUCCEEDED","expectedVersion":"x"}`), {0xff, 0xfe, 0x00}}
			topics := []string{"start-next", "get", "ghost/get", "ghost/update", "notify-next", "otaflow-flood/update"}
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				// Reconnect when the broker drops this client for a packet over its limit.
				c := paho.NewClient(paho.NewClientOptions().AddBroker(s.Broker.URL()).SetClientID(rogue).SetAutoReconnect(false))
				if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
					continue
				}
				for i := 0; i < 200; i++ {
					c.Publish("$aws/things/"+rogue+"/jobs/"+topics[i%len(topics)], 0, false, junk[(n+i)%len(junk)])
				}
				c.Publish("$aws/things/"+rogue+"/jobs/update", 0, false, bytes.Repeat([]byte("B"), 200<<10)) // over the broker's limit
				c.Disconnect(0)
				sent.Store(rogue, n)
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			doc := strings.Repeat("x", localiot.MaxDocumentBytes+n%1000)
			if n%2 == 1 {
				doc = `{"type":"otaflow.update",` // not JSON: devices reject it, the service stores it
			}
			_, err := s.IoT.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String(fmt.Sprintf("flood-%d", n)), Targets: []string{"rogue-1"}, Document: aws.String(doc)})
			if err != nil {
				refused.Store(n, true)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()

	res, err := rolloutclient.Result(ctx, run)
	// Bounded means no growth with the flood's volume: flood on for 5 s more and compare.
	runtime.GC()
	var mid runtime.MemStats
	runtime.ReadMemStats(&mid)
	time.Sleep(5 * time.Second)
	if p := os.Getenv("FLOOD_PPROF"); p != "" {
		f, _ := os.Create(p)
		pprof.WriteHeapProfile(f)
		f.Close()
	}
	close(stop)
	wg.Wait()
	require.NoError(t, err, res.Message)
	require.Equal(t, contract.StateSucceeded, res.State)
	counter.requireExactlyOnce(t, 100, &res, func(th string) string { return agentVersion(s, th) })
	rounds := 0
	sent.Range(func(_, v any) bool { rounds += v.(int) + 1; return true })
	oversize := 0
	refused.Range(func(k, _ any) bool {
		if k.(int)%2 == 0 {
			oversize++
		}
		return true
	})
	require.Positive(t, rounds, "the rogue devices flooded")
	require.Positive(t, oversize, "oversize documents were refused")

	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	t.Logf("flood: %d rounds of 201 messages from 5 rogue devices; heap %d MiB before, %d MiB after the rollout, %d MiB after 5 s more flood",
		rounds, before.HeapAlloc>>20, mid.HeapAlloc>>20, after.HeapAlloc>>20)
	require.Less(t, int64(after.HeapAlloc)-int64(mid.HeapAlloc), int64(32<<20), "the heap does not grow with the flood")
}
