package mqttplane

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"

	"github.com/otaflow/otaflow/internal/iotjobs"
	"github.com/otaflow/otaflow/internal/localiot"
)

// FuzzDeviceRequest sends arbitrary Jobs API requests, as a device may, to the jobs service's
// MQTT plane: none may panic it, and every refusal is one of the protocol's errors (an
// InternalError would mean a request reached a state the code does not expect).
func FuzzDeviceRequest(f *testing.F) {
	svc, err := localiot.Open(localiot.Options{Path: filepath.Join(f.TempDir(), "jobs.db"), Logger: zerolog.Nop()})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { svc.Close() })
	if _, err := svc.CreateThing("dev-1", nil); err != nil {
		f.Fatal(err)
	}
	if _, err := svc.CreateJob(localiot.CreateJobInput{JobID: "j1", Targets: []string{"dev-1"}, Document: `{"a":1}`}); err != nil {
		f.Fatal(err)
	}
	p := &Plane{svc: svc, log: zerolog.Nop()}
	for _, seed := range []struct{ topic, payload string }{
		{"$aws/things/dev-1/jobs/get", `{"clientToken":"c"}`},
		{"$aws/things/dev-1/jobs/start-next", `{"statusDetails":{"step":"a"},"stepTimeoutInMinutes":5}`},
		{"$aws/things/dev-1/jobs/j1/get", `{"executionNumber":1,"includeJobDocument":false}`},
		{"$aws/things/dev-1/jobs/$next/get", ``},
		{"$aws/things/dev-1/jobs/j1/update", `{"status":"IN_PROGRESS","expectedVersion":1,"statusDetails":{"k":"v"}}`},
		{"$aws/things/dev-1/jobs/j1/update", `{"status":"SUCCEEDED","statusDetails":{"k":7}}`},
		{"$aws/things/dev-1/jobs/j1/update", `{"status":"CANCELED"}`},
		{"$aws/things/dev-1/jobs/nope/update", `{"status":"FAILED","stepTimeoutInMinutes":-3}`},
		{"$aws/things/dev-2/jobs/j1/delete", `{`},
	} {
		f.Add(seed.topic, []byte(seed.payload))
	}
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		r, ok := iotjobs.ParseRequestTopic(topic)
		if !ok {
			return
		}
		reply, err := p.answer(topic, r, payload, 0)
		if err == nil {
			if reply == nil {
				t.Fatal("accepted with no reply")
			}
			return
		}
		var e *localiot.Error
		if !errors.As(err, &e) || e.Code == localiot.CodeInternal {
			t.Fatalf("%s %q: not a protocol error: %v", topic, payload, err)
		}
	})
}
