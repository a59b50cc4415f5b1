package stack_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestNoSecretInHelpAndNoDefaultKey runs the built CLI as an operator would: --help shows no
// secret from the environment, and the production jobs service refuses to start without its
// own keys or with the development key every copy of otaflow knows.
func TestNoSecretInHelpAndNoDefaultKey(t *testing.T) {
	bin := starterCLI(t)
	run := func(env []string, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = append(os.Environ(), env...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	secrets := []string{"OTAFLOW_SECRET_ACCESS_KEY=s3cret-key", "OTAFLOW_MQTT_PASSWORD=s3cret-password"}
	for _, cmd := range [][]string{{"jobs-service", "--help"}, {"create-software-update-job", "--help"}, {"--help"}} {
		out, err := run(secrets, cmd...)
		require.NoError(t, err, out)
		require.NotContains(t, out, "s3cret", "starter %v", cmd)
	}
	out, _ := run(secrets, "jobs-service", "--help")
	require.Contains(t, out, "[OTAFLOW_SECRET_ACCESS_KEY]", "the help names the variable instead")

	dir := t.TempDir()
	out, err := run([]string{"OTAFLOW_MQTT_PASSWORD=pw"}, "jobs-service", "--data-dir", dir, "--jobs-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0")
	require.Error(t, err)
	require.Contains(t, out, "--access-key-id and --secret-access-key (or OTAFLOW_ACCESS_KEY_ID, OTAFLOW_SECRET_ACCESS_KEY) are required")
	out, err = run([]string{"OTAFLOW_MQTT_PASSWORD=pw", "OTAFLOW_ACCESS_KEY_ID=otaflow", "OTAFLOW_SECRET_ACCESS_KEY=otaflow-secret"},
		"jobs-service", "--data-dir", dir, "--jobs-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0")
	require.Error(t, err)
	require.Contains(t, out, "the development key every copy of otaflow knows")
	out, err = run([]string{"OTAFLOW_MQTT_PASSWORD=pw", "OTAFLOW_ACCESS_KEY_ID=fleet", "OTAFLOW_SECRET_ACCESS_KEY=" + strings.Repeat("k", 32)},
		"jobs-service", "--data-dir", dir, "--jobs-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0")
	require.Error(t, err)
	require.Contains(t, out, "the embedded broker needs --mqtt-tls-cert, --mqtt-tls-key and --mqtt-tls-ca", "devices are not named by their client ID by default")
}
