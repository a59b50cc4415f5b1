package mqttplane

import (
	"encoding/json"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/mqtttest"
)

// TestThrottledBeyondThingsShare: with its workers busy, the plane queues perThingQueued
// requests from one thing and answers the rest RequestThrottled at once, with their client
// tokens; another thing's requests still queue.
func TestThrottledBeyondThingsShare(t *testing.T) {
	b := mqtttest.All()[0](t)
	svc, err := localiot.Open(localiot.Options{Path: filepath.Join(t.TempDir(), "jobs.db"), Logger: zerolog.Nop()})
	require.NoError(t, err)
	defer svc.Close()
	p := newPlane(svc, zerolog.Nop()) // no workers: nothing leaves the queue
	p.client = b.ServiceClient(t, "svc")

	var mu sync.Mutex
	var codes, tokens []string
	rogue := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL).SetClientID("rogue"))
	require.True(t, rogue.Connect().WaitTimeout(10*time.Second))
	defer rogue.Disconnect(0)
	require.True(t, rogue.Subscribe("$aws/things/rogue/jobs/get/rejected", 1, func(_ paho.Client, m paho.Message) {
		var r struct{ Code, ClientToken string }
		json.Unmarshal(m.Payload(), &r)
		mu.Lock()
		codes, tokens = append(codes, r.Code), append(tokens, r.ClientToken)
		mu.Unlock()
	}).WaitTimeout(10*time.Second))

	for i := range 20 {
		p.handle("$aws/things/rogue/jobs/get", []byte(`{"clientToken":"t`+strconv.Itoa(i)+`"}`))
	}
	p.handle("$aws/things/dev-1/jobs/get", nil)
	require.Len(t, p.requests, perThingQueued+1)
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(codes) == 20-perThingQueued }, 10*time.Second, 10*time.Millisecond)
	for i, c := range codes {
		require.Equal(t, "RequestThrottled", c)
		require.Equal(t, "t"+strconv.Itoa(perThingQueued+i), tokens[i])
	}
}

// TestInlinePlaneOnTheEmbeddedBroker: beside its embedded broker the plane takes requests and
// sends replies and notifications in process (no MQTT session of its own), and a device sees
// the same Jobs API as over a connection.
func TestInlinePlaneOnTheEmbeddedBroker(t *testing.T) {
	b := mqtttest.Embedded(t)
	svc, err := localiot.Open(localiot.Options{Path: filepath.Join(t.TempDir(), "jobs.db"), Logger: zerolog.Nop()})
	require.NoError(t, err)
	defer svc.Close()
	p, err := Serve(svc, Options{Inline: b.Embedded, Logger: zerolog.Nop()})
	require.NoError(t, err)
	defer p.Close()
	require.True(t, p.Inline())
	_, err = Serve(svc, Options{Inline: b.Embedded, SharedGroup: "g", Logger: zerolog.Nop()})
	require.ErrorContains(t, err, "serves alone")
	_, err = svc.CreateThing("dev-1", nil)
	require.NoError(t, err)

	got := make(chan paho.Message, 10)
	dev := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL).SetClientID("dev-1"))
	require.True(t, dev.Connect().WaitTimeout(10*time.Second))
	defer dev.Disconnect(0)
	for _, topic := range []string{"$aws/things/dev-1/jobs/notify-next", "$aws/things/dev-1/jobs/start-next/accepted"} {
		require.True(t, dev.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) { got <- m }).WaitTimeout(10*time.Second))
	}
	require.EqualValues(t, 1, b.Embedded.Sessions(), "the device's session only: the plane has none")

	_, err = svc.CreateJob(localiot.CreateJobInput{JobID: "j1", Targets: []string{"dev-1"}, Document: `{"step":"one"}`})
	require.NoError(t, err)
	next := func() (string, map[string]any) {
		t.Helper()
		select {
		case m := <-got:
			var v map[string]any
			require.NoError(t, json.Unmarshal(m.Payload(), &v))
			return m.Topic(), v
		case <-time.After(10 * time.Second):
			t.Fatal("no message from the plane within 10s")
			return "", nil
		}
	}
	topic, v := next()
	require.Equal(t, "$aws/things/dev-1/jobs/notify-next", topic)
	require.Equal(t, "j1", v["execution"].(map[string]any)["jobId"])

	require.True(t, dev.Publish("$aws/things/dev-1/jobs/start-next", 1, false, `{"clientToken":"tok-1"}`).WaitTimeout(10*time.Second))
	topic, v = next()
	require.Equal(t, "$aws/things/dev-1/jobs/start-next/accepted", topic)
	require.Equal(t, "tok-1", v["clientToken"])
	require.Equal(t, "IN_PROGRESS", v["execution"].(map[string]any)["status"])
}
