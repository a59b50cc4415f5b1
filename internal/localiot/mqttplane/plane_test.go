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

// request is a paho.Message as the broker would hand one to the plane.
type request struct {
	topic   string
	payload []byte
}

func (r request) Duplicate() bool   { return false }
func (r request) Qos() byte         { return 1 }
func (r request) Retained() bool    { return false }
func (r request) Topic() string     { return r.topic }
func (r request) MessageID() uint16 { return 0 }
func (r request) Payload() []byte   { return r.payload }
func (r request) Ack()              {}

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
		p.handle(nil, request{"$aws/things/rogue/jobs/get", []byte(`{"clientToken":"t` + strconv.Itoa(i) + `"}`)})
	}
	p.handle(nil, request{"$aws/things/dev-1/jobs/get", nil})
	require.Len(t, p.requests, perThingQueued+1)
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(codes) == 20-perThingQueued }, 10*time.Second, 10*time.Millisecond)
	for i, c := range codes {
		require.Equal(t, "RequestThrottled", c)
		require.Equal(t, "t"+strconv.Itoa(perThingQueued+i), tokens[i])
	}
}
