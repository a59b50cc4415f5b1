package jobdoc_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/jobdoc"
)

func TestParse(t *testing.T) {
	good := `{"type":"otaflow.update","schemaVersion":"1","operation":"update","rolloutId":"r","softwareToUpdate":"core","version":"1.2.3","updateAgentLogLevel":"WARN"}`
	d, err := jobdoc.Parse([]byte(good))
	require.NoError(t, err)
	require.Equal(t, "1.2.3", d.Version)
	require.True(t, jobdoc.IsOtaflow([]byte(good)))

	for name, tc := range map[string]struct{ doc, want string }{
		"not json":             {`{`, "not a valid otaflow document"},
		"unknown field":        {`{"type":"otaflow.update","schemaVersion":"1","operation":"update","softwareToUpdate":"core","version":"1","rm":"-rf"}`, "unknown field"},
		"future schema":        {`{"type":"otaflow.update","schemaVersion":"2","operation":"update","softwareToUpdate":"core","version":"1"}`, "update the agent first"},
		"bad operation":        {`{"type":"otaflow.update","schemaVersion":"1","operation":"wipe","softwareToUpdate":"core","version":"1"}`, "operation"},
		"bad software":         {`{"type":"otaflow.update","schemaVersion":"1","operation":"update","softwareToUpdate":"kernel","version":"1"}`, "softwareToUpdate"},
		"no version":           {`{"type":"otaflow.update","schemaVersion":"1","operation":"update","softwareToUpdate":"core"}`, "no version"},
		"bad restart":          {`{"type":"otaflow.update","schemaVersion":"1","operation":"update","softwareToUpdate":"core","version":"1.0.0","restartPolicy":"reboot-twice"}`, "restartPolicy"},
		"bad log level":        {`{"type":"otaflow.update","schemaVersion":"1","operation":"update","softwareToUpdate":"core","version":"1.0.0","updateAgentLogLevel":"LOUD"}`, "updateAgentLogLevel"},
		"traversal in version": {`{"type":"otaflow.update","schemaVersion":"1","operation":"update","softwareToUpdate":"core","version":"../../../OUTSIDE"}`, "version \"../../../OUTSIDE\" is invalid"},
		"slash in version":     {`{"type":"otaflow.update","schemaVersion":"1","operation":"update","softwareToUpdate":"core","version":"1.0.0/x"}`, "is invalid"},
		"not semver":           {`{"type":"otaflow.update","schemaVersion":"1","operation":"update","softwareToUpdate":"core","version":"9"}`, "not a semantic version"},
		"bad rollout id":       {`{"type":"otaflow.update","schemaVersion":"1","operation":"update","rolloutId":"a/b","softwareToUpdate":"core","version":"1.0.0"}`, "rolloutId"},
		"bad component":        {`{"type":"otaflow.update","schemaVersion":"1","operation":"update","softwareToUpdate":"components","components":{"../x":"1.0.0"}}`, "component name"},
		"other job type":       {`{"type":"firmware","schemaVersion":"1"}`, "not \"otaflow.update\""},
		"oversize":             {`{"type":"otaflow.update","schemaVersion":"1","operation":"update","softwareToUpdate":"core","version":"1","rolloutId":"` + strings.Repeat("x", jobdoc.MaxBytes) + `"}`, "the limit is 32768"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := jobdoc.Parse([]byte(tc.doc))
			require.ErrorContains(t, err, tc.want)
		})
	}
	require.False(t, jobdoc.IsOtaflow([]byte(`{"operation":"reboot"}`)))
}
