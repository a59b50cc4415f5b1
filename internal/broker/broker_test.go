package broker_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/broker"
	"github.com/otaflow/otaflow/internal/mqtttest"
	"github.com/otaflow/otaflow/internal/pki"
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

// TestCloseWhileClientsChurn closes brokers while devices keep connecting, taking over each
// other's client IDs and leaving: Close returns and every client is disconnected. (mochi's own
// Close could deadlock here: mochi-mqtt/server#488.)
func TestCloseWhileClientsChurn(t *testing.T) {
	for round := 0; round < 10; round++ {
		b, err := broker.Start(broker.Options{Addr: "127.0.0.1:0", ServiceUser: "svc", ServicePassword: "pw", Logger: zerolog.Nop()})
		require.NoError(t, err)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var connected atomic.Int64
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					c := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL()).SetClientID(fmt.Sprintf("dev-%d", i%4)).
						SetAutoReconnect(false).SetConnectTimeout(2 * time.Second))
					if tok := c.Connect(); tok.WaitTimeout(3*time.Second) && tok.Error() == nil {
						connected.Add(1)
						if i%2 == 0 {
							c.Disconnect(0)
						}
					}
				}
			}()
		}
		require.Eventually(t, func() bool { return connected.Load() > 20 }, 10*time.Second, time.Millisecond)
		closed := make(chan error, 1)
		go func() { closed <- b.Close() }()
		select {
		case err := <-closed:
			require.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: broker Close did not return with clients connecting and leaving", round)
		}
		close(stop)
		wg.Wait()
	}
}

// TestBrokerLimits runs on the embedded broker and on mosquitto with the shipped
// configuration: a device sending a packet over AWS IoT Core's 128 KiB limit is disconnected,
// and the jobs service gets every one of a burst of QoS 1 requests it cannot take as fast as
// they come (mosquitto's defaults would keep about 1,000 of them).
func TestBrokerLimits(t *testing.T) {
	for _, start := range mqtttest.All() {
		b := start(t)
		t.Run(b.Name, func(t *testing.T) {
			lost := make(chan error, 1)
			dev := paho.NewClient(b.DeviceOptions(t, "dev-big", "dev-big").SetAutoReconnect(false).
				SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err }))
			require.True(t, dev.Connect().WaitTimeout(5*time.Second))
			dev.Publish("$aws/things/dev-big/jobs/get", 0, false, make([]byte, 129<<10))
			select {
			case <-lost:
			case <-time.After(10 * time.Second):
				t.Fatal("a device that sent a 129 KiB packet is still connected")
			}

			const burst = 5000
			var got atomic.Int64
			release := make(chan struct{})
			svc := connect(t, b.URL, "otaflow-jobs-service", mqtttest.ServiceUser, mqtttest.ServicePassword)
			require.True(t, svc.Subscribe("$aws/things/+/jobs/get", 1, func(paho.Client, paho.Message) {
				<-release // the service is busy: nothing is acknowledged until the burst is in
				got.Add(1)
			}).WaitTimeout(5*time.Second))
			pub := connect(t, b.URL, "otaflow-jobs-burst", mqtttest.ServiceUser, mqtttest.ServicePassword)
			var toks []paho.Token
			for i := 0; i < burst; i++ {
				toks = append(toks, pub.Publish(fmt.Sprintf("$aws/things/dev-%d/jobs/get", i), 1, false, []byte(`{"clientToken":"x"}`)))
			}
			for _, tok := range toks {
				require.True(t, tok.WaitTimeout(30*time.Second))
				require.NoError(t, tok.Error())
			}
			close(release)
			assert.Eventually(t, func() bool { return got.Load() == burst }, 30*time.Second, 20*time.Millisecond)
			require.EqualValues(t, burst, got.Load(), "requests the jobs service got")
		})
	}
}

// TestServiceClientIDIsReserved: a client without the service's credentials cannot connect
// with the jobs service's client ID, which would take the service's session over and leave it
// deaf; the service stays connected and keeps getting requests.
func TestServiceClientIDIsReserved(t *testing.T) {
	b := mqtttest.Embedded(t)
	got := make(chan struct{}, 10)
	svc := connect(t, b.URL, "otaflow-jobs-service", mqtttest.ServiceUser, mqtttest.ServicePassword)
	require.True(t, svc.Subscribe("$aws/things/+/jobs/get", 1, func(paho.Client, paho.Message) { got <- struct{}{} }).WaitTimeout(5*time.Second))
	for _, id := range []string{"otaflow-jobs-service", "otaflow-jobs-other"} {
		thief := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL).SetClientID(id).SetAutoReconnect(false).SetConnectRetry(false))
		tok := thief.Connect()
		require.True(t, tok.WaitTimeout(5*time.Second))
		require.Error(t, tok.Error(), "a device may not connect as %s", id)
	}
	dev := connect(t, b.URL, "dev-1", "", "")
	require.True(t, dev.Publish("$aws/things/dev-1/jobs/get", 1, false, []byte(`{}`)).WaitTimeout(5*time.Second))
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("the jobs service lost its session to a device that used its client ID")
	}
	require.True(t, svc.IsConnected())
}

// TestForgedReplyThroughClientID: a client whose ID embeds another thing's topic path
// ("victim/jobs/j1") must neither read that thing's replies nor forge them. The embedded
// broker refuses the ID; mosquitto with the shipped configuration takes the identity from the
// thief's certificate instead (and a certificate named like the jobs service gets no more than
// any device). The jobs service's own reply reaches the victim (the subscription works), the
// forgery does not.
func TestForgedReplyThroughClientID(t *testing.T) {
	for _, start := range mqtttest.All() {
		b := start(t)
		t.Run(b.Name, func(t *testing.T) {
			reply := "$aws/things/victim/jobs/j1/get/accepted"
			got := make(chan string, 10)
			victim := paho.NewClient(b.DeviceOptions(t, "victim", "victim").SetAutoReconnect(false))
			require.True(t, victim.Connect().WaitTimeout(5*time.Second))
			t.Cleanup(func() { victim.Disconnect(0) })
			require.True(t, victim.Subscribe("$aws/things/victim/jobs/+/get/accepted", 1, func(_ paho.Client, m paho.Message) {
				got <- string(m.Payload())
			}).WaitTimeout(5*time.Second))

			thief := paho.NewClient(b.DeviceOptions(t, "victim/jobs/j1", "thief").SetAutoReconnect(false))
			if tok := thief.Connect(); tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
				defer thief.Disconnect(0)
				stolen := make(chan string, 10)
				thief.Subscribe("$aws/things/victim/jobs/+/get/accepted", 0, func(_ paho.Client, m paho.Message) { stolen <- string(m.Payload()) }).WaitTimeout(5 * time.Second)
				thief.Publish(reply, 0, false, `{"forged":true}`).WaitTimeout(5 * time.Second)
				posing := paho.NewClient(b.DeviceOptions(t, "otaflow-jobs-service", mqtttest.ServiceUser).SetAutoReconnect(false))
				if posing.Connect().WaitTimeout(5*time.Second) && posing.IsConnected() {
					posing.Publish(reply, 0, false, `{"forged":"as the service"}`).WaitTimeout(5 * time.Second)
					defer posing.Disconnect(0)
				}
				svc := connect(t, b.URL, "otaflow-jobs-service", mqtttest.ServiceUser, mqtttest.ServicePassword)
				require.True(t, svc.Publish(reply, 1, false, `{"genuine":true}`).WaitTimeout(5*time.Second))
				select {
				case m := <-got:
					require.Equal(t, `{"genuine":true}`, m, "the victim got a forged reply")
				case <-time.After(10 * time.Second):
					t.Fatal("the jobs service's reply did not reach the victim")
				}
				select {
				case m := <-got:
					t.Fatalf("the victim got a second reply: %s", m)
				case m := <-stolen:
					t.Fatalf("the thief read the victim's reply: %s", m)
				case <-time.After(500 * time.Millisecond):
				}
			} else {
				require.Equal(t, "embedded", b.Name, "only the embedded broker refuses the client ID")
			}
			if b.CA != nil {
				// Session takeover: another device's certificate with the victim's client ID.
				// mosquitto names the session after the certificate, so the victim stays.
				taker := paho.NewClient(b.DeviceOptions(t, "victim", "thief").SetAutoReconnect(false))
				require.True(t, taker.Connect().WaitTimeout(5*time.Second))
				defer taker.Disconnect(0)
				time.Sleep(300 * time.Millisecond)
				require.True(t, victim.IsConnectionOpen(), "a device with another's client ID took its session over")
			}
		})
	}
}

// TestDevicesOnTLSOnly: with DevicesOnTLSOnly (the jobs service's embedded broker in
// production) a device may not connect on the plain listener, where only the client ID would
// name it; the service may, and a device with its certificate connects on the TLS listener.
func TestDevicesOnTLSOnly(t *testing.T) {
	ca, err := pki.Open(t.TempDir())
	require.NoError(t, err)
	serverTLS, err := ca.ServerTLS("127.0.0.1")
	require.NoError(t, err)
	b, err := broker.Start(broker.Options{Addr: "127.0.0.1:0", TLSAddr: "127.0.0.1:0", TLS: serverTLS, DevicesOnTLSOnly: true,
		ServiceUser: "svc", ServicePassword: "pw", Logger: zerolog.Nop()})
	require.NoError(t, err)
	defer b.Close()
	connect(t, b.URL(), "service", "svc", "pw")
	plain := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL()).SetClientID("dev-1").SetAutoReconnect(false).SetConnectRetry(false))
	tok := plain.Connect()
	require.True(t, tok.WaitTimeout(5*time.Second))
	require.Error(t, tok.Error(), "a device on the plain listener is refused")
	devTLS, err := ca.ClientTLS("dev-1")
	require.NoError(t, err)
	dev := paho.NewClient(paho.NewClientOptions().AddBroker(b.TLSURL()).SetClientID("dev-1").SetTLSConfig(devTLS).SetAutoReconnect(false))
	tok = dev.Connect()
	require.True(t, tok.WaitTimeout(5*time.Second))
	require.NoError(t, tok.Error())
	dev.Disconnect(0)
}
