package jobdoc_test

import (
	"strings"
	"testing"

	"github.com/otaflow/otaflow/internal/jobdoc"
)

// FuzzParse: no input makes Parse panic, and what it accepts is safe to act on: it encodes
// and parses back the same, and its versions can name no path. `go test -fuzz FuzzParse
// ./internal/jobdoc` explores; plain `go test` runs the seeds.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		`{"type":"otaflow.update","schemaVersion":"1","operation":"update","rolloutId":"r","softwareToUpdate":"core","version":"1.2.3"}`,
		`{"type":"otaflow.update","schemaVersion":"1","operation":"rollback","softwareToUpdate":"ota_agent","version":"1.0.0-rc.1+b5","restartPolicy":"none","bakeSeconds":5}`,
		`{"type":"otaflow.update","schemaVersion":"1","operation":"update","softwareToUpdate":"components","components":{"com.example.A":"2.0.0"}}`,
		`{"type":"otaflow.update","schemaVersion":"1","operation":"update","softwareToUpdate":"core","version":"../../../OUTSIDE"}`,
		`{"type":"otaflow.update","schemaVersion":"1","operation":"update","softwareToUpdate":"core","version":"1.0.0","healthCheck":{"command":["sh","-c","id"]}}`,
		`{"type":"otaflow.update","schemaVersion":"1","artifact":{"url":"x","size":-1}}`,
		`[]`, `null`, `{"type":1}`, ``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		d, err := jobdoc.Parse(raw)
		if err != nil {
			return
		}
		versions := []string{d.Version}
		for _, v := range d.Components {
			versions = append(versions, v)
		}
		for _, v := range versions {
			if v != "" && (strings.ContainsAny(v, `/\`) || strings.Contains(v, "..")) {
				t.Fatalf("accepted a version that names a path: %q", v)
			}
		}
		again, err := d.Marshal()
		if err != nil {
			t.Fatalf("accepted document does not encode: %v", err)
		}
		if _, err := jobdoc.Parse([]byte(again)); err != nil {
			t.Fatalf("accepted document does not parse back: %v", err)
		}
	})
}
