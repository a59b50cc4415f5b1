package localiot_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/mqtttest"
)

// TestNamedShadowOverMQTT: a device updates its own named shadow and reads it back over both
// brokers; merges, version conflicts and bad documents are answered as the Device Shadow
// service answers them; another device can neither read nor write it.
func TestNamedShadowOverMQTT(t *testing.T) {
	for _, start := range mqtttest.All() {
		b := start(t)
		t.Run(b.Name, func(t *testing.T) {
			svc := openService(t, t.TempDir())
			defer svc.Close()
			servePlane(t, svc, b.URL, "dev-1", "dev-2")
			base := "$aws/things/dev-1/shadow/name/otaflow/"
			dev := connectDevice(t, b, "dev-1")
			for _, s := range []string{"update/accepted", "update/rejected", "get/accepted", "get/rejected"} {
				require.EqualValues(t, 1, dev.subscribe(base+s), s)
			}
			send := func(op string, body string) {
				tok := dev.client.Publish(base+op, 1, false, []byte(body))
				require.True(t, tok.WaitTimeout(10*time.Second))
			}
			send("update", `{"state":{"reported":{"software":{"core":"1.0.0","ota_agent":"2.0.0"},"connected":true}},"clientToken":"t1"}`)
			acc := dev.awaitTopic(base + "update/accepted")
			require.Equal(t, "t1", acc["clientToken"])
			require.EqualValues(t, 1, acc["version"])
			send("update", `{"state":{"reported":{"software":{"core":"1.1.0"},"connected":null}}}`)
			dev.awaitTopic(base + "update/accepted")
			send("get", `{"clientToken":"g1"}`)
			got := dev.awaitTopic(base + "get/accepted")
			raw, _ := json.Marshal(got["state"])
			require.JSONEq(t, `{"reported":{"software":{"core":"1.1.0","ota_agent":"2.0.0"}}}`, string(raw), "merged, null removed")
			require.EqualValues(t, 2, got["version"])
			require.Equal(t, "g1", got["clientToken"])

			send("update", `{"state":{"reported":{"x":1}},"version":1,"clientToken":"old"}`)
			rej := dev.awaitTopic(base + "update/rejected")
			require.EqualValues(t, 409, rej["code"])
			require.Equal(t, "old", rej["clientToken"])
			send("update", `{"reported":{"x":1}}`)
			rej = dev.awaitTopic(base + "update/rejected")
			require.EqualValues(t, 400, rej["code"])
			require.Contains(t, rej["message"], "state")

			// Another device: may not read dev-1's shadow topics, and its writes change nothing.
			other := connectDevice(t, b, "dev-2")
			refused := other.subscribe(base + "#")
			if b.Name == "embedded" {
				require.EqualValues(t, 0x80, refused, "another device's shadow topics are refused")
			} // mosquitto grants the subscription and delivers nothing
			other.client.Publish(base+"update", 1, false, []byte(`{"state":{"reported":{"software":{"core":"6.6.6"}}}}`)).WaitTimeout(5 * time.Second)
			send("get", `{"clientToken":"g2"}`) // dev-1 asks; a reply dev-2 could see if it were allowed
			dev.awaitTopic(base + "get/accepted")
			time.Sleep(300 * time.Millisecond)
			require.Zero(t, other.received(base), "dev-2 saw dev-1's shadow")
			doc, err := svc.GetShadow("dev-1", "otaflow")
			require.NoError(t, err)
			raw, _ = json.Marshal(doc["state"])
			require.NotContains(t, string(raw), "6.6.6", "a device wrote another's shadow")
		})
	}
}

// The classic (unnamed) shadow and the rest of the Device Shadow API over MQTT, on both
// brokers: a device updates and reads its classic shadow; {"state": null} empties a shadow;
// a delete answers the last version, the shadow is then gone (and not listed), and created
// again it carries on from that version, as AWS's does within 48 hours; a version conflict
// says what AWS says.
func TestClassicShadowAndDeleteOverMQTT(t *testing.T) {
	onEachBroker(t, "$aws/things/dev-1/shadow/#", func(t *testing.T, svc *localiot.Service, dev *device) {
		send := func(topic, body string) {
			require.True(t, dev.client.Publish(topic, 1, false, []byte(body)).WaitTimeout(10*time.Second))
		}
		classic := "$aws/things/dev-1/shadow/"
		send(classic+"get", `{"clientToken":"g0"}`)
		rej := dev.awaitTopic(classic + "get/rejected")
		require.EqualValues(t, 404, rej["code"])
		require.Equal(t, "No shadow exists with name: 'dev-1'", rej["message"])
		send(classic+"update", `{"state":{"reported":{"led":"off"},"desired":{"led":"on"}}}`)
		require.EqualValues(t, 1, dev.awaitTopic(classic + "update/accepted")["version"])
		send(classic+"get", `{"clientToken":"g1"}`)
		got := dev.awaitTopic(classic + "get/accepted")
		raw, _ := json.Marshal(got["state"])
		require.JSONEq(t, `{"reported":{"led":"off"},"desired":{"led":"on"},"delta":{"led":"on"}}`, string(raw))

		send(classic+"update", `{"state":{"reported":{"led":"on"}},"version":7}`)
		rej = dev.awaitTopic(classic + "update/rejected")
		require.EqualValues(t, 409, rej["code"])
		require.Equal(t, "Version conflict", rej["message"])

		send(classic+"update", `{"state":null}`)
		require.EqualValues(t, 2, dev.awaitTopic(classic + "update/accepted")["version"])
		doc, err := svc.GetShadow("dev-1", "")
		require.NoError(t, err)
		raw, _ = json.Marshal(doc["state"])
		require.JSONEq(t, `{}`, string(raw), "state null empties desired and reported")

		named := "$aws/things/dev-1/shadow/name/otaflow/"
		send(named+"update", `{"state":{"reported":{"core":"1.0.0"}}}`)
		dev.awaitTopic(named + "update/accepted")
		names, err := svc.ListNamedShadows("dev-1")
		require.NoError(t, err)
		require.Equal(t, []string{"otaflow"}, names, "the classic shadow is not a named one")
		send(named+"delete", `{"clientToken":"d1"}`)
		del := dev.awaitTopic(named + "delete/accepted")
		require.EqualValues(t, 1, del["version"])
		require.Equal(t, "d1", del["clientToken"])
		_, err = svc.GetShadow("dev-1", "otaflow")
		require.ErrorContains(t, err, "No shadow exists with name: 'dev-1~otaflow'")
		names, err = svc.ListNamedShadows("dev-1")
		require.NoError(t, err)
		require.Empty(t, names)
		send(named+"delete", `{}`)
		require.EqualValues(t, 404, dev.awaitTopic(named + "delete/rejected")["code"], "deleting it again")
		send(named+"update", `{"state":{"reported":{"core":"1.1.0"}}}`)
		require.EqualValues(t, 2, dev.awaitTopic(named + "update/accepted")["version"], "created again, its version carries on")
	})
}
