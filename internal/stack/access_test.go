package stack_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Roles through the CLIs a team uses: an admin issues keys with `starter access`, the AWS CLI
// signing with a viewer's key reads and is refused a change with AccessDeniedException, an
// operator's key registers things through `starter thing`, and every change and refusal is
// read back with `starter audit` (list, filters, JSON, export as JSON lines).
func TestRolesThroughTheCLIs(t *testing.T) {
	bin := starterCLI(t)
	s := startStack(t)
	run := func(env []string, args ...string) string {
		t.Helper()
		out, stderr, err := runStarterEnv(t, bin, s, env, args...)
		require.NoError(t, err, "starter %s: %s", strings.Join(args, " "), stderr)
		return out
	}
	issue := func(role string, extra ...string) (id, secret string, env []string) {
		var k struct {
			ID     string `json:"accessKeyId"`
			Secret string `json:"secretAccessKey"`
		}
		require.NoError(t, json.Unmarshal([]byte(run(nil, append([]string{"access", "create", "--role", role, "-o", "json", "--reason", "onboarding"}, extra...)...)), &k))
		return k.ID, k.Secret, []string{"OTAFLOW_ACCESS_KEY_ID=" + k.ID, "OTAFLOW_SECRET_ACCESS_KEY=" + k.Secret}
	}
	viewerID, viewerSecret, viewer := issue("viewer")
	operatorID, _, operator := issue("operator", "--description", "site team")

	_, stderr, err := awsCLIAs(t, s.JobsURL, viewerID, viewerSecret, "iot", "list-things")
	require.NoError(t, err, "a viewer reads: %s", stderr)
	_, stderr, err = awsCLIAs(t, s.JobsURL, viewerID, viewerSecret, "iot", "create-thing", "--thing-name", "pi-1")
	require.Error(t, err)
	require.Contains(t, string(stderr), "AccessDeniedException")
	require.Contains(t, string(stderr), "needs the operator or admin role")

	run(operator, "thing", "add", "pi-1", "pi-2")
	require.Contains(t, run(operator, "access", "whoami"), operatorID+": operator (may read, operate)")
	_, errText, err := runStarterEnv(t, bin, s, operator, "access", "create", "--role", "admin")
	require.Error(t, err)
	require.Contains(t, errText, "AccessDeniedException")
	_, errText, err = runStarterEnv(t, bin, s, viewer, "thing", "add", "pi-3")
	require.Error(t, err)
	require.Contains(t, errText, "needs the operator or admin role")

	keys := run(nil, "access", "list")
	require.Contains(t, keys, operatorID)
	require.Contains(t, keys, "site team")
	require.NotContains(t, keys, viewerSecret)

	var listed struct {
		Entries []struct{ Who, Action, Resource, Outcome, Reason string }
	}
	require.NoError(t, json.Unmarshal([]byte(run(viewer, "audit", "list", "--outcome", "denied", "-o", "json")), &listed))
	var denied []string
	for _, e := range listed.Entries {
		denied = append(denied, e.Who+" "+e.Action)
	}
	require.ElementsMatch(t, []string{viewerID + " CreateThing", operatorID + " CreateAccessKey", viewerID + " CreateThing"}, denied)
	text := run(nil, "audit", "list", "--who", operatorID, "--action", "CreateThing")
	require.Contains(t, text, "/things/pi-2")
	require.Contains(t, text, "ok")

	file := filepath.Join(t.TempDir(), "audit.jsonl")
	run(nil, "audit", "export", "--file", file)
	raw, err := os.ReadFile(file)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	var first struct{ Action, Reason string }
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &first))
	require.Equal(t, "CreateAccessKey", first.Action, "oldest first")
	require.Equal(t, "onboarding", first.Reason)
	require.GreaterOrEqual(t, len(lines), 8)
	_, errText, err = runStarterEnv(t, bin, s, nil, "audit", "export", "--file", file)
	require.Error(t, err, "an export never overwrites")
	require.Contains(t, errText, "not overwritten")
}
