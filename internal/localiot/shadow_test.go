package localiot_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

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
