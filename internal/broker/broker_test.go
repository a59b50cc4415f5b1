package broker_test

import (
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/broker"
)

func connect(t *testing.T, url, id, user, pass string) paho.Client {
	c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(id).SetUsername(user).SetPassword(pass).SetAutoReconnect(false))
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(5*time.Second))
	require.NoError(t, tok.Error())
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

// TestDevicePublishRateIsCapped: a device publishing as fast as it can gets AWS IoT Core's
// 100 publishes per second through; the rest are dropped. The jobs service is not capped.
func TestDevicePublishRateIsCapped(t *testing.T) {
	b, err := broker.Start(broker.Options{Addr: "127.0.0.1:0", ServiceUser: "svc", ServicePassword: "pw", Logger: zerolog.Nop()})
	require.NoError(t, err)
	defer b.Close()
	var fromDevice, fromService atomic.Int64
	svc := connect(t, b.URL(), "service", "svc", "pw")
	require.True(t, svc.Subscribe("$aws/things/+/jobs/#", 0, func(_ paho.Client, m paho.Message) {
		if m.Topic() == "$aws/things/dev-1/jobs/get" {
			fromDevice.Add(1)
		}
	}).WaitTimeout(5*time.Second))
	dev := connect(t, b.URL(), "dev-1", "", "")
	require.True(t, dev.Subscribe("$aws/things/dev-1/jobs/notify", 0, func(paho.Client, paho.Message) { fromService.Add(1) }).WaitTimeout(5*time.Second))

	// A device publish over 16 KiB is dropped: only the service sends large messages.
	dev.Publish("$aws/things/dev-1/jobs/get", 0, false, make([]byte, 17<<10)).Wait()
	time.Sleep(100 * time.Millisecond)
	require.Zero(t, fromDevice.Load())

	start := time.Now()
	for i := 0; i < 1000; i++ {
		dev.Publish("$aws/things/dev-1/jobs/get", 0, false, []byte(`{}`))
		svc.Publish("$aws/things/dev-1/jobs/notify", 0, false, []byte(`{}`))
	}
	elapsed := time.Since(start)
	time.Sleep(300 * time.Millisecond)
	allowed := 100 + int64(100*elapsed.Seconds()) + 5
	require.LessOrEqual(t, fromDevice.Load(), allowed, "the device got past its rate")
	require.GreaterOrEqual(t, fromDevice.Load(), int64(90), "the device's first burst goes through")
	require.Eventually(t, func() bool { return fromService.Load() == 1000 }, 5*time.Second, 10*time.Millisecond, "the service is not capped")
}
