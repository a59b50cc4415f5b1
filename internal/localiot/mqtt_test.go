package localiot_test

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/broker"
	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/localiot/mqttplane"
	"github.com/otaflow/otaflow/internal/localiot/store"
	"github.com/otaflow/otaflow/internal/mqtttest"
)

// device is a bare MQTT client acting as a device, recording what it receives.
type device struct {
	t      testing.TB
	name   string
	client paho.Client
	mu     sync.Mutex
	msgs   []paho.Message
}

func connectDevice(t testing.TB, b mqtttest.Broker, name string) *device {
	t.Helper()
	d := &device{t: t, name: name}
	d.client = paho.NewClient(b.DeviceOptions(t, name, name).SetCleanSession(true))
	tok := d.client.Connect()
	require.True(t, tok.WaitTimeout(10*time.Second))
	require.NoError(t, tok.Error())
	t.Cleanup(func() { d.client.Disconnect(0) })
	return d
}

// subscribe returns the granted QoS (0x80 means refused).
func (d *device) subscribe(filter string) byte {
	tok := d.client.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) {
		d.mu.Lock()
		d.msgs = append(d.msgs, m)
		d.mu.Unlock()
	})
	require.True(d.t, tok.WaitTimeout(10*time.Second))
	return tok.(*paho.SubscribeToken).Result()[filter]
}

func (d *device) publish(suffix string, body any) {
	raw, ok := body.([]byte)
	if !ok {
		raw, _ = json.Marshal(body)
	}
	tok := d.client.Publish("$aws/things/"+d.name+"/jobs/"+suffix, 1, false, raw)
	require.True(d.t, tok.WaitTimeout(10*time.Second))
}

// await returns the first message received on the exact topic suffix after index from.
func (d *device) await(suffix string) map[string]any {
	d.t.Helper()
	return d.awaitTopic("$aws/things/" + d.name + "/jobs/" + suffix)
}

// awaitTopic returns (and takes) the first message received on topic.
func (d *device) awaitTopic(topic string) map[string]any {
	d.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		d.mu.Lock()
		for i, m := range d.msgs {
			if m.Topic() == topic {
				d.msgs = append(d.msgs[:i:i], d.msgs[i+1:]...)
				d.mu.Unlock()
				var out map[string]any
				require.NoError(d.t, json.Unmarshal(m.Payload(), &out))
				return out
			}
		}
		d.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	d.t.Fatalf("%s: nothing on %s", d.name, topic)
	return nil
}

func (d *device) received(prefix string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, m := range d.msgs {
		if strings.HasPrefix(m.Topic(), prefix) {
			n++
		}
	}
	return n
}

// servePlane connects svc to the broker at url and registers things.
func servePlane(t testing.TB, svc *localiot.Service, url string, things ...string) {
	t.Helper()
	plane, err := mqttplane.Serve(svc, mqttplane.Options{BrokerURL: url, Username: mqtttest.ServiceUser, Password: mqtttest.ServicePassword, Logger: zerolog.Nop()})
	require.NoError(t, err)
	t.Cleanup(plane.Close)
	for _, n := range things {
		_, err := svc.CreateThing(n, nil)
		require.NoError(t, err)
	}
}

func TestMQTTJobsAPI(t *testing.T) {
	for _, start := range mqtttest.All() {
		b := start(t)
		t.Run(b.Name, func(t *testing.T) {
			svc := openService(t, t.TempDir())
			defer svc.Close()
			servePlane(t, svc, b.URL, "dev-1", "dev-2")

			dev := connectDevice(t, b, "dev-1")
			require.EqualValues(t, 1, dev.subscribe("$aws/things/dev-1/jobs/#"))
			other := connectDevice(t, b, "dev-2")
			refused := other.subscribe("$aws/things/dev-1/jobs/#")
			if b.Name == "embedded" {
				// mosquitto grants the subscription but delivers nothing (checked at the end).
				require.EqualValues(t, 0x80, refused, "a device may not subscribe to another's topics")
			}
			require.EqualValues(t, 1, other.subscribe("$aws/things/dev-2/jobs/#"))

			_, err := svc.CreateJob(localiot.CreateJobInput{JobID: "job-1", Targets: []string{"dev-1"}, Document: `{"step":"one"}`})
			require.NoError(t, err)
			n := dev.await("notify-next")
			exec := n["execution"].(map[string]any)
			require.Equal(t, "job-1", exec["jobId"])
			require.Equal(t, "QUEUED", exec["status"])
			require.Equal(t, map[string]any{"step": "one"}, exec["jobDocument"], "the document arrives as a JSON object")

			// Another device publishing on dev-1's topics changes nothing.
			tok := other.client.Publish("$aws/things/dev-1/jobs/start-next", 1, false, []byte(`{"clientToken":"evil"}`))
			tok.WaitTimeout(5 * time.Second)
			time.Sleep(200 * time.Millisecond)
			e, err := svc.DescribeJobExecution("job-1", "dev-1")
			require.NoError(t, err)
			require.Equal(t, store.ExecQueued, e.Status)

			dev.publish("get", map[string]any{"clientToken": "g1"})
			got := dev.await("get/accepted")
			require.Equal(t, "g1", got["clientToken"])
			require.Len(t, got["queuedJobs"], 1)

			dev.publish("start-next", map[string]any{"clientToken": "s1", "statusDetails": map[string]string{"step": "starting"}})
			started := dev.await("start-next/accepted")
			require.Equal(t, "s1", started["clientToken"])
			sx := started["execution"].(map[string]any)
			require.Equal(t, "IN_PROGRESS", sx["status"])
			require.EqualValues(t, 2, sx["versionNumber"])

			dev.publish("job-1/update", map[string]any{"clientToken": "u0", "status": "IN_PROGRESS", "expectedVersion": 1})
			rej := dev.await("job-1/update/rejected")
			require.Equal(t, "VersionMismatch", rej["code"])
			require.EqualValues(t, 2, rej["executionState"].(map[string]any)["versionNumber"])

			dev.publish("job-1/update", map[string]any{"clientToken": "u1", "status": "BOGUS"})
			require.Equal(t, "InvalidRequest", dev.await("job-1/update/rejected")["code"])

			dev.publish("job-1/update", []byte(`{not json`))
			require.Equal(t, "InvalidJson", dev.await("job-1/update/rejected")["code"])

			dev.publish("$next/get", map[string]any{"clientToken": "n1"})
			nx := dev.await("$next/get/accepted")
			require.Equal(t, "job-1", nx["execution"].(map[string]any)["jobId"])

			dev.publish("job-1/update", map[string]any{"clientToken": "u2", "status": "SUCCEEDED", "expectedVersion": 2,
				"statusDetails": map[string]string{"installedVersion": "2"}, "includeJobExecutionState": true})
			acc := dev.await("job-1/update/accepted")
			require.Equal(t, "SUCCEEDED", acc["executionState"].(map[string]any)["status"])
			empty := dev.await("notify-next")
			require.NotContains(t, empty, "execution", "nothing is pending any more")

			dev.publish("job-1/update", map[string]any{"clientToken": "u3", "status": "FAILED"})
			ended := dev.await("job-1/update/rejected")
			require.Equal(t, "InvalidStateTransition", ended["code"], "as AWS answers an update of an ended execution")
			require.Equal(t, "SUCCEEDED", ended["executionState"].(map[string]any)["status"])

			j, err := svc.DescribeJob("job-1")
			require.NoError(t, err)
			require.Equal(t, store.JobCompleted, j.Status)
			require.Equal(t, 1, j.Counts.Succeeded)

			// Queued job rejected straight away by the device.
			_, err = svc.CreateJob(localiot.CreateJobInput{JobID: "job-2", Targets: []string{"dev-1"}, Document: `{}`})
			require.NoError(t, err)
			dev.await("notify-next")
			dev.publish("job-2/update", map[string]any{"clientToken": "u4", "status": "SUCCEEDED"})
			require.Equal(t, "InvalidStateTransition", dev.await("job-2/update/rejected")["code"])
			dev.publish("job-2/update", map[string]any{"clientToken": "u5", "status": "REJECTED", "statusDetails": map[string]string{"reason": "no"}})
			dev.await("job-2/update/accepted")

			require.Zero(t, other.received("$aws/things/dev-1/"), "dev-2 saw nothing of dev-1's")
		})
	}
}

func TestBrokerRefusesServiceImpostor(t *testing.T) {
	for _, start := range mqtttest.All() {
		b := start(t)
		t.Run(b.Name, func(t *testing.T) {
			c := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL).SetClientID("impostor").
				SetUsername(mqtttest.ServiceUser).SetPassword("guess"))
			tok := c.Connect()
			require.True(t, tok.WaitTimeout(10*time.Second))
			require.Error(t, tok.Error())
			if b.CA != nil {
				// The device listener takes no client without a certificate from its CA.
				c := paho.NewClient(paho.NewClientOptions().AddBroker(b.DeviceURL).SetClientID("dev-1").
					SetTLSConfig(&tls.Config{RootCAs: b.CA.Pool()}).SetConnectRetry(false))
				tok := c.Connect()
				require.True(t, tok.WaitTimeout(10*time.Second))
				require.Error(t, tok.Error(), "an anonymous device is refused")
			}
		})
	}
}

func TestMQTTTimeoutsAndRetries(t *testing.T) {
	for _, start := range mqtttest.All() {
		b := start(t)
		t.Run(b.Name, func(t *testing.T) {
			svc, clock := openWithClock(t)
			servePlane(t, svc, b.URL, "dev-1")
			dev := connectDevice(t, b, "dev-1")
			dev.subscribe("$aws/things/dev-1/jobs/#")

			_, err := svc.CreateJob(localiot.CreateJobInput{JobID: "j", Targets: []string{"dev-1"}, Document: `{}`,
				Retry: []store.RetryCriteria{{FailureType: "TIMED_OUT", NumberOfRetries: 1}}})
			require.NoError(t, err)
			dev.await("notify-next")

			// A step timeout the device sets itself on start-next, then lets run out.
			dev.publish("start-next", map[string]any{"clientToken": "s1", "stepTimeoutInMinutes": 1})
			first := dev.await("start-next/accepted")["execution"].(map[string]any)
			require.EqualValues(t, 1, first["executionNumber"])
			clock.Advance(2 * time.Minute)
			// The retry queues execution 2 of the same job.
			require.Eventually(t, func() bool {
				e, _ := svc.DescribeJobExecution("j", "dev-1")
				return e.ExecutionNumber == 2 && e.Status == store.ExecQueued
			}, 5*time.Second, 5*time.Millisecond)
			// ... and tells the device: its next execution changed, though the job did not.
			require.Eventually(t, func() bool {
				dev.mu.Lock()
				defer dev.mu.Unlock()
				for _, m := range dev.msgs {
					if m.Topic() == "$aws/things/dev-1/jobs/notify-next" && strings.Contains(string(m.Payload()), `"executionNumber":2`) {
						return true
					}
				}
				return false
			}, 5*time.Second, 10*time.Millisecond, "notify-next for execution 2")
			dev.publish("j/update", map[string]any{"clientToken": "late", "status": "SUCCEEDED", "executionNumber": 1})
			require.Equal(t, "ResourceNotFound", dev.await("j/update/rejected")["code"], "the timed-out execution is gone")

			dev.publish("start-next", map[string]any{"clientToken": "s2", "stepTimeoutInMinutes": 1})
			second := dev.await("start-next/accepted")["execution"].(map[string]any)
			require.EqualValues(t, 2, second["executionNumber"])
			// Extending the step timer keeps it alive past the first deadline.
			dev.publish("j/update", map[string]any{"clientToken": "u1", "status": "IN_PROGRESS", "stepTimeoutInMinutes": 5})
			dev.await("j/update/accepted")
			clock.Advance(2 * time.Minute)
			time.Sleep(50 * time.Millisecond)
			dev.publish("j/update", map[string]any{"clientToken": "u2", "status": "SUCCEEDED"})
			dev.await("j/update/accepted")

			// A device may not describe an execution that has ended: AWS answers
			// TerminalStateReached (the control plane still describes it).
			dev.publish("j/get", map[string]any{"clientToken": "g", "executionNumber": 1})
			require.Equal(t, "TerminalStateReached", dev.await("j/get/rejected")["code"])
			old, err := svc.DescribeJobExecution("j", "dev-1", 1)
			require.NoError(t, err)
			require.Equal(t, store.ExecTimedOut, old.Status)
			j, err := svc.DescribeJob("j")
			require.NoError(t, err)
			require.Equal(t, store.JobCompleted, j.Status)
			require.Equal(t, 1, j.Counts.Succeeded)
		})
	}
}

// BenchmarkDeviceDescribeExecution is one device's DescribeJobExecution round trip over MQTT
// ($aws/things/{thing}/jobs/{jobId}/get, with the job document) for a job targeting a fleet
// of -targets things: a device's view of a job must not cost more with the fleet's size.
func BenchmarkDeviceDescribeExecution(b *testing.B) {
	for _, n := range []int{100, 10000} {
		b.Run(fmt.Sprintf("targets=%d", n), func(b *testing.B) {
			// AWS IoT Core's 100 publishes per second per device would cap the benchmark itself.
			br, err := broker.Start(broker.Options{Addr: "127.0.0.1:0", ServiceUser: mqtttest.ServiceUser,
				ServicePassword: mqtttest.ServicePassword, PublishesPerSecond: 1e6, Logger: zerolog.Nop()})
			require.NoError(b, err)
			defer br.Close()
			svc := openService(b, b.TempDir())
			defer svc.Close()
			things := make([]string, n)
			for i := range things {
				things[i] = fmt.Sprintf("dev-%d", i)
			}
			servePlane(b, svc, br.URL(), things...)
			_, err = svc.CreateJob(localiot.CreateJobInput{JobID: "job-1", Targets: things, Document: `{"operation":"update"}`})
			require.NoError(b, err)
			dev := connectDevice(b, mqtttest.Broker{URL: br.URL(), DeviceURL: br.URL()}, "dev-0")
			replies := make(chan []byte, 1)
			require.True(b, dev.client.Subscribe("$aws/things/dev-0/jobs/job-1/get/+", 1, func(_ paho.Client, m paho.Message) {
				replies <- m.Payload()
			}).WaitTimeout(10*time.Second))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				dev.publish("job-1/get", map[string]any{"clientToken": strconv.Itoa(i)})
				select {
				case r := <-replies:
					if !bytes.Contains(r, []byte(`"jobDocument"`)) {
						b.Fatalf("reply without the job document: %s", r)
					}
				case <-time.After(10 * time.Second):
					b.Fatal("no reply to job-1/get")
				}
			}
		})
	}
}

// TestFloodingThingLeavesOthersServed: while one thing sends a burst of requests another is
// served as usual, and every request of the burst that reaches the service is answered;
// pending lists hold at most ten executions, as AWS's.
func TestFloodingThingLeavesOthersServed(t *testing.T) {
	for _, start := range mqtttest.All() {
		b := start(t)
		t.Run(b.Name, func(t *testing.T) {
			svc := openService(t, t.TempDir())
			defer svc.Close()
			servePlane(t, svc, b.URL, "rogue", "dev-1")
			for i := range 12 {
				_, err := svc.CreateJob(localiot.CreateJobInput{JobID: fmt.Sprintf("j%02d", i), Targets: []string{"rogue"}, Document: `{}`})
				require.NoError(t, err)
			}
			rogue := connectDevice(t, b, "rogue")
			require.EqualValues(t, 1, rogue.subscribe("$aws/things/rogue/jobs/#"))
			dev := connectDevice(t, b, "dev-1")
			require.EqualValues(t, 1, dev.subscribe("$aws/things/dev-1/jobs/#"))

			_, err := svc.CreateJob(localiot.CreateJobInput{JobID: "j12", Targets: []string{"rogue"}, Document: `{}`})
			require.NoError(t, err)
			n := rogue.await("notify")
			require.Len(t, n["jobs"].(map[string]any)["QUEUED"], 10, "a notify lists at most ten pending executions")

			// The embedded broker passes 100 publishes a second from one client (AWS IoT
			// Core's per-connection quota); mosquitto passes all of them.
			for i := range 2000 {
				rogue.client.Publish("$aws/things/rogue/jobs/get", 0, false, []byte(`{"clientToken":"r`+strconv.Itoa(i)+`"}`))
			}
			dev.publish("get", map[string]any{"clientToken": "mine"})
			got := dev.await("get/accepted")
			require.Equal(t, "mine", got["clientToken"], "the other thing is served during the flood")

			require.Eventually(t, func() bool { return rogue.received("$aws/things/rogue/jobs/get/") >= 100 }, 10*time.Second, 50*time.Millisecond,
				"%d replies", rogue.received("$aws/things/rogue/jobs/get/"))
			a := rogue.await("get/accepted")
			require.Len(t, a["queuedJobs"], 10, "get-pending lists at most ten executions")
		})
	}
}

// TestDeviceProtocolDetails: what AWS's Jobs MQTT API does in the small: an IN_PROGRESS
// execution with a timeout says how long it has left, a member of the wrong type is an
// InvalidRequest that keeps the client token, and a request without a token gets a reply
// without one.
func TestDeviceProtocolDetails(t *testing.T) {
	for _, start := range mqtttest.All() {
		b := start(t)
		t.Run(b.Name, func(t *testing.T) {
			dev := deviceWithJob(t, b)

			dev.publish("start-next", map[string]any{"clientToken": "s1", "stepTimeoutInMinutes": 5})
			exec := dev.await("start-next/accepted")["execution"].(map[string]any)
			left := exec["approximateSecondsBeforeTimedOut"].(float64)
			require.InDelta(t, 300, left, 5, "seconds before the step times out")

			dev.publish("j1/update", []byte(`{"clientToken":"u1","status":"IN_PROGRESS","statusDetails":{"progress":7}}`))
			rej := dev.await("j1/update/rejected")
			require.Equal(t, "InvalidRequest", rej["code"], "a number in statusDetails is an invalid request, as AWS answers")
			require.Equal(t, "u1", rej["clientToken"])

			dev.publish("get", []byte(`{}`))
			got := dev.await("get/accepted")
			require.NotContains(t, got, "clientToken", "no token sent, none echoed")

			// A 17 KB update is answered with the reason, never dropped in silence: by the jobs
			// service through mosquitto (which passes up to AWS's 128 KiB), and by the embedded
			// broker itself, which takes at most 16 KiB from a device so that a flooding device
			// cannot queue much at the service.
			big := `{"clientToken":"u2","status":"IN_PROGRESS","statusDetails":{"log":"` + strings.Repeat("x", 17<<10) + `"}}`
			dev.publish("j1/update", []byte(big))
			rej = dev.await("j1/update/rejected")
			require.Equal(t, "u2", rej["clientToken"])
			require.Equal(t, "InvalidRequest", rej["code"])
			require.NotEmpty(t, rej["message"])
			dev.publish("get", []byte(`{"clientToken":"after"}`))
			require.Equal(t, "after", dev.await("get/accepted")["clientToken"], "the device is still served")

			// A topic in the Jobs namespace that is no Jobs API reaches nobody, nor does a reply a
			// device forges (only the service answers). The embedded
			// broker answers it InvalidTopic, as AWS does under a policy allowing
			// $aws/things/{thing}/jobs/*. Through mosquitto, deploy/mosquitto/acl lets a device
			// publish only the four Jobs requests (as an AWS policy written topic by topic does),
			// so the broker refuses it. An observer with the service's rights, which may read
			// every thing's topics, would see it were it forwarded; the device's next request,
			// sent after it on the same connection, tells the observer has had its chance.
			observer := b.ServiceClient(t, "otaflow-jobs-observer")
			var seen sync.Map
			tok := observer.SubscribeMultiple(map[string]byte{"$aws/things/dev-1/jobs/j1/frobnicate": 1,
				"$aws/things/dev-1/jobs/j1/get/accepted": 1, "$aws/things/dev-1/jobs/get": 1},
				func(_ paho.Client, m paho.Message) { seen.Store(m.Topic(), true) })
			require.True(t, tok.WaitTimeout(10*time.Second))
			require.NoError(t, tok.Error())

			dev.publish("j1/frobnicate", []byte(`{"clientToken":"f1"}`))
			dev.publish("j1/get/accepted", []byte(`{"clientToken":"f2","execution":{"jobId":"j1","status":"SUCCEEDED"}}`))
			if b.Name == "embedded" {
				rej = dev.await("j1/frobnicate/rejected")
				require.Equal(t, "InvalidTopic", rej["code"])
				require.Equal(t, "f1", rej["clientToken"])
				require.Contains(t, rej["message"], "jobs/{jobId}/update", "the message names the topics that are")
				require.Equal(t, "InvalidTopic", dev.await("j1/get/accepted/rejected")["code"])
			}
			dev.publish("get", []byte(`{"clientToken":"after-topic"}`))
			require.Equal(t, "after-topic", dev.await("get/accepted")["clientToken"], "the device is still served")
			require.Eventually(t, func() bool { _, ok := seen.Load("$aws/things/dev-1/jobs/get"); return ok }, 10*time.Second, 10*time.Millisecond)
			_, forwarded := seen.Load("$aws/things/dev-1/jobs/j1/frobnicate")
			require.False(t, forwarded, "a topic that is no Jobs API is not passed on")
			_, forwarded = seen.Load("$aws/things/dev-1/jobs/j1/get/accepted")
			require.False(t, forwarded, "a reply forged by a device is not passed on")
			require.Zero(t, dev.received("$aws/things/dev-1/jobs/j1/frobnicate/accepted"))

			// An update with an empty job ID is within the ACL's jobs/+/update, so it reaches the
			// jobs service through mosquitto too; both answer it InvalidTopic.
			dev.publish("/update", []byte(`{"clientToken":"e1","status":"SUCCEEDED"}`))
			rej = dev.await("/update/rejected")
			require.Equal(t, "InvalidTopic", rej["code"])
			require.Equal(t, "e1", rej["clientToken"])
			require.Contains(t, rej["message"], "jobs/{jobId}/update")
		})
	}
}

// deviceWithJob serves the Jobs API on b for dev-1, connects dev-1 (subscribed to its topics)
// and queues job j1 for it.
func deviceWithJob(t *testing.T, b mqtttest.Broker) *device {
	svc := openService(t, t.TempDir())
	t.Cleanup(func() { svc.Close() })
	servePlane(t, svc, b.URL, "dev-1")
	dev := connectDevice(t, b, "dev-1")
	require.EqualValues(t, 1, dev.subscribe("$aws/things/dev-1/jobs/#"))
	_, err := svc.CreateJob(localiot.CreateJobInput{JobID: "j1", Targets: []string{"dev-1"}, Document: `{}`})
	require.NoError(t, err)
	return dev
}

// startReplicas opens two services on one PostgreSQL database, each with its MQTT plane.
func startReplicas(t *testing.T, b mqtttest.Broker, o mqttplane.Options) ([]*localiot.Service, []*mqttplane.Plane) {
	onPostgres = true
	defer func() { onPostgres = false }()
	dir := t.TempDir()
	var svcs []*localiot.Service
	var planes []*mqttplane.Plane
	for i := range 2 {
		svc := openService(t, dir) // the same database
		t.Cleanup(func() { svc.Close() })
		o := o
		o.BrokerURL, o.ClientID, o.Username, o.Password = b.URL, fmt.Sprintf("otaflow-jobs-replica-%d", i), mqtttest.ServiceUser, mqtttest.ServicePassword
		o.Logger = zerolog.New(zerolog.NewTestWriter(t)).With().Int("replica", i).Logger()
		plane, err := mqttplane.Serve(svc, o)
		require.NoError(t, err)
		t.Cleanup(plane.Close)
		svcs, planes = append(svcs, svc), append(planes, plane)
	}
	_, err := svcs[0].CreateThing("dev-1", nil)
	require.NoError(t, err)
	return svcs, planes
}

// getsAnsweredOnce sends n get requests and checks each is answered exactly once; it returns
// how many each replica served.
func getsAnsweredOnce(t *testing.T, dev *device, svcs []*localiot.Service, n int) []int64 {
	t.Helper()
	before := make([]int64, len(svcs))
	for i, s := range svcs {
		before[i] = s.APICalls()["mqtt get"]
	}
	base := dev.received("$aws/things/dev-1/jobs/get/accepted")
	for i := range n {
		dev.publish("get", map[string]any{"clientToken": fmt.Sprint(i)})
	}
	require.Eventually(t, func() bool { return dev.received("$aws/things/dev-1/jobs/get/accepted")-base >= n }, 10*time.Second, 10*time.Millisecond)
	time.Sleep(300 * time.Millisecond) // a second answer to any request would arrive by now
	require.Equal(t, n, dev.received("$aws/things/dev-1/jobs/get/accepted")-base, "each request answered once")
	served := make([]int64, len(svcs))
	var total int64
	for i, s := range svcs {
		served[i] = s.APICalls()["mqtt get"] - before[i]
		total += served[i]
	}
	require.EqualValues(t, n, total, "each request handled by one replica")
	return served
}

// Replicas on one PostgreSQL database share a broker through a shared subscription: each
// device request is handled by one of them. (Debian's mosquitto 2.0.11 delivers no $aws topic
// to a shared subscription, so there the replicas elect a leader instead: next test.)
func TestReplicasShareDeviceRequests(t *testing.T) {
	b := mqtttest.Embedded(t)
	svcs, _ := startReplicas(t, b, mqttplane.Options{SharedGroup: "otaflow-jobs"})
	dev := connectDevice(t, b, "dev-1")
	require.EqualValues(t, 1, dev.subscribe("$aws/things/dev-1/jobs/#"))
	getsAnsweredOnce(t, dev, svcs, 40)
}

// With Exclusive planes one replica, the holder of the leader's lease, serves devices;
// when it ends another takes over, and every request is still answered once.
func TestOneLeaderServesDevices(t *testing.T) {
	for _, start := range mqtttest.All() {
		b := start(t)
		t.Run(b.Name, func(t *testing.T) {
			svcs, planes := startReplicas(t, b, mqttplane.Options{Exclusive: true})
			dev := connectDevice(t, b, "dev-1")
			require.EqualValues(t, 1, dev.subscribe("$aws/things/dev-1/jobs/#"))
			var served []int64
			require.Eventually(t, func() bool { // the leader subscribes once it holds the lock
				dev.publish("get", map[string]any{"clientToken": "probe"})
				time.Sleep(100 * time.Millisecond)
				return dev.received("$aws/things/dev-1/jobs/get/accepted") > 0
			}, 10*time.Second, 10*time.Millisecond)
			time.Sleep(200 * time.Millisecond)
			served = getsAnsweredOnce(t, dev, svcs, 30)
			leader := 0
			if served[1] > 0 {
				leader = 1
			}
			require.Zero(t, served[1-leader], "only the leader serves: %v", served)

			planes[leader].Close()
			require.NoError(t, svcs[leader].Close())
			base := dev.received("$aws/things/dev-1/jobs/get/accepted")
			require.Eventually(t, func() bool { // the other replica takes over
				dev.publish("get", map[string]any{"clientToken": "probe-2"})
				time.Sleep(100 * time.Millisecond)
				return dev.received("$aws/things/dev-1/jobs/get/accepted") > base
			}, 15*time.Second, 10*time.Millisecond)
			time.Sleep(200 * time.Millisecond)
			other := svcs[1-leader]
			before := other.APICalls()["mqtt get"]
			getsAnsweredOnce(t, dev, []*localiot.Service{other}, 30)
			require.EqualValues(t, 30, other.APICalls()["mqtt get"]-before)
		})
	}
}

// TestNotifyOnlyWhenTheListChanges: notify goes out when an execution joins or leaves a
// thing's pending list, not when one starts (AWS's "added to or removed from"); notify-next
// when the next execution changes.
func TestNotifyOnlyWhenTheListChanges(t *testing.T) {
	onEachBroker(t, "$aws/things/dev-1/jobs/#", func(t *testing.T, svc *localiot.Service, dev *device) {
		jobIDs := func(n map[string]any, status string) []string {
			var ids []string
			list, _ := n["jobs"].(map[string]any)[status].([]any)
			for _, s := range list {
				ids = append(ids, s.(map[string]any)["jobId"].(string))
			}
			return ids
		}

		_, err := svc.CreateJob(localiot.CreateJobInput{JobID: "j1", Targets: []string{"dev-1"}, Document: `{}`})
		require.NoError(t, err)
		require.Equal(t, []string{"j1"}, jobIDs(dev.await("notify"), "QUEUED"))
		require.Equal(t, "j1", dev.await("notify-next")["execution"].(map[string]any)["jobId"])

		dev.publish("j1/update", map[string]any{"status": "IN_PROGRESS", "expectedVersion": 1, "clientToken": "a"})
		dev.await("j1/update/accepted")
		// The next notice is the one for j2: j1 starting was not news to either topic.
		_, err = svc.CreateJob(localiot.CreateJobInput{JobID: "j2", Targets: []string{"dev-1"}, Document: `{}`})
		require.NoError(t, err)
		n := dev.await("notify")
		require.Equal(t, []string{"j1"}, jobIDs(n, "IN_PROGRESS"))
		require.Equal(t, []string{"j2"}, jobIDs(n, "QUEUED"))

		dev.publish("j1/update", map[string]any{"status": "SUCCEEDED", "expectedVersion": 2, "clientToken": "b"})
		dev.await("j1/update/accepted")
		n = dev.await("notify")
		require.Empty(t, jobIDs(n, "IN_PROGRESS"))
		require.Equal(t, []string{"j2"}, jobIDs(n, "QUEUED"))
		require.Equal(t, "j2", dev.await("notify-next")["execution"].(map[string]any)["jobId"])
		require.Zero(t, dev.received("$aws/things/dev-1/jobs/notify-next"), "one notify-next each time the next changed")
		require.Zero(t, dev.received("$aws/things/dev-1/jobs/notify"), "one notify each time the list changed")
	})
}

// TestStartingALaterJobMovesNext: a device may start any QUEUED execution, not only its next
// one. Starting a later one makes it the next (IN_PROGRESS comes first), and notify-next says
// so, while starting the next one is no news; the list keeps its members either way.
func TestStartingALaterJobMovesNext(t *testing.T) {
	onEachBroker(t, "$aws/things/dev-1/jobs/notify-next", func(t *testing.T, svc *localiot.Service, dev *device) {
		next := func() any {
			e, _ := dev.await("notify-next")["execution"].(map[string]any)
			return e["jobId"]
		}
		for _, id := range []string{"j1", "j2", "j3"} {
			_, err := svc.CreateJob(localiot.CreateJobInput{JobID: id, Targets: []string{"dev-1"}, Document: `{}`})
			require.NoError(t, err)
		}
		require.Equal(t, "j1", next())
		start := func(id string) {
			_, _, err := svc.UpdateExecution(localiot.UpdateInput{Thing: "dev-1", JobID: id, Status: store.ExecInProgress})
			require.NoError(t, err)
		}
		start("j2")
		require.Equal(t, "j2", next(), "j2 in progress comes before j1 queued")
		start("j1")
		require.Equal(t, "j1", next(), "two in progress: the older first")
		// j3 is not the next one, but starting it changes nothing a notice says.
		start("j3")
		_, _, err := svc.UpdateExecution(localiot.UpdateInput{Thing: "dev-1", JobID: "j1", Status: store.ExecSucceeded})
		require.NoError(t, err)
		require.Equal(t, "j2", next())
		require.Zero(t, dev.received("$aws/things/dev-1/jobs/notify-next"), "one notify-next each time the next changed")
	})
}

// onEachBroker runs test on both brokers, each with a fresh service, its plane, and dev-1
// connected and subscribed to filter.
func onEachBroker(t *testing.T, filter string, test func(t *testing.T, svc *localiot.Service, dev *device)) {
	for _, start := range mqtttest.All() {
		b := start(t)
		t.Run(b.Name, func(t *testing.T) {
			svc := openService(t, t.TempDir())
			defer svc.Close()
			servePlane(t, svc, b.URL, "dev-1")
			dev := connectDevice(t, b, "dev-1")
			require.EqualValues(t, 1, dev.subscribe(filter))
			test(t, svc, dev)
		})
	}
}
