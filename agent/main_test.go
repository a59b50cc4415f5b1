package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// trustFlags are the TUF settings the agent requires (parse only reads the root file).
func trustFlags(t *testing.T) []string {
	p := filepath.Join(t.TempDir(), "root.json")
	require.NoError(t, os.WriteFile(p, []byte(`{"signed":{}}`), 0o644))
	return []string{"--trusted-root", p, "--tuf-url", "https://127.0.0.1:4566/tuf/otaflow-releases/", "--os", "ubuntu", "--architecture", "x86_64"}
}

func trustYAML(t *testing.T) string {
	f := trustFlags(t)
	return "trustedRoot: " + f[1] + "\ntufUrl: " + f[3] + "\nos: ubuntu\narchitecture: x86_64\n"
}

func TestConfigFileFlagsAndEnvironment(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "agent.yaml")
	require.NoError(t, os.WriteFile(file, []byte("thingName: from-file\nbroker: tcp://file:1883\nstateDir: "+dir+"\nmaxDeferral: 5m\nlogLevel: debug\n"+
		trustYAML(t)+"tls:\n  alpn: true\nlogMaxSizeMB: 7\n"), 0o600))

	s, err := parse([]string{"--config", file}, os.Stderr)
	require.NoError(t, err)
	require.Equal(t, "from-file", s.cfg.ThingName)
	require.Equal(t, "tcp://file:1883", s.cfg.BrokerURL)
	require.Equal(t, 5*time.Minute, s.cfg.MaxDeferral)
	require.Equal(t, "debug", s.log.Level)
	require.Equal(t, filepath.Join(dir, "agent.sock"), s.cfg.IPCSocket)
	require.Equal(t, version, s.cfg.AgentVersion)
	require.Equal(t, 7, s.log.MaxSizeMB, "a key that is not the flag's camelCase name")
	require.Equal(t, "/var/lib/otaflow", s.slots.Root, "the default stands where nothing says otherwise")

	// The environment beats the file; a flag beats both.
	t.Setenv("OTAFLOW_AGENT_THING_NAME", "from-env")
	s, err = parse([]string{"--config", file}, os.Stderr)
	require.NoError(t, err)
	require.Equal(t, "from-env", s.cfg.ThingName)
	s, err = parse([]string{"--config", file, "--thing-name", "from-flag", "--ipc-socket", "off"}, os.Stderr)
	require.NoError(t, err)
	require.Equal(t, "from-flag", s.cfg.ThingName)
	require.Empty(t, s.cfg.IPCSocket)

	// JSON works too: YAML is a superset.
	jsonFile := filepath.Join(dir, "agent.json")
	require.NoError(t, os.WriteFile(jsonFile, []byte(`{"thingName":"j","broker":"tcp://j:1883","trustedRoot":"`+trustFlags(t)[1]+`","tufUrl":"https://x/tuf/b/","os":"raspbian","architecture":"armv7l"}`), 0o600))
	t.Setenv("OTAFLOW_AGENT_THING_NAME", "")
	s, err = parse([]string{"--config", jsonFile}, os.Stderr)
	require.NoError(t, err)
	require.Equal(t, "j", s.cfg.ThingName)
}

func TestBadConfigIsRefusedWithTheReason(t *testing.T) {
	dir := t.TempDir()
	n := 0
	write := func(body string) string {
		n++
		p := filepath.Join(dir, fmt.Sprintf("c%d.yaml", n))
		require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
		return p
	}
	t.Setenv("OTAFLOW_AGENT_LOG_MAX_BACKUPS", "")
	trust := trustFlags(t)
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"misspelt key":    {[]string{"--config", write("thingNme: x\n")}, `unknown field "thingNme"`},
		"missing file":    {[]string{"--config", filepath.Join(dir, "nope.yaml")}, "read agent config"},
		"bad duration":    {[]string{"--max-deferral", "soon"}, "--max-deferral"},
		"cert over tcp":   {[]string{"--cert", write("x"), "--key", write("x")}, "load device certificate"},
		"no trusted root": {[]string{"--install-root", dir}, "--trusted-root is required"},
		"bad log level":   {append([]string{"--log-level", "loud", "--thing-name", "d", "--state-dir", dir, "--ipc-socket", "off"}, trust...), "log level"},
		"no tuf url":      {[]string{"--thing-name", "d", "--trusted-root", trust[1]}, "--tuf-url"},
		"bad env value":   {trust, "OTAFLOW_AGENT_LOG_MAX_BACKUPS: invalid value"},
		"plain http metadata outside dev": {[]string{"--thing-name", "d", "--trusted-root", trust[1], "--tuf-url", "http://jobs:4566/tuf/b/"},
			"--tuf-url http://jobs:4566/tuf/b/ is plain HTTP: serve it over HTTPS"},
		"a platform releases do not name": {append(slices.Clone(trust), "--os", "debian"), `operating system "debian" is invalid`},
		"an unsupported combination":      {append(slices.Clone(trust), "--os", "raspbian"), "raspbian/x86_64 is not a supported combination"},
		"claim with a certificate": {[]string{"--claim-cert", write("x"), "--claim-key", write("x"), "--cert", write("x"), "--key", write("x"), "--broker", "ssl://b:8883"},
			"--claim-cert provisions the device's own certificate: leave out --cert and --key"},
		"claim over tcp":      {[]string{"--claim-cert", write("x"), "--claim-key", write("x")}, "--claim-cert needs the broker's mutual-TLS listener"},
		"claim without a key": {[]string{"--claim-cert", write("x"), "--broker", "ssl://b:8883"}, "claim certificate: mutual TLS needs both"},
		"bad provisioning parameter": {[]string{"--claim-cert", write("x"), "--claim-key", write("x"), "--broker", "ssl://b:8883", "--provisioning-parameter", "serial"},
			`--provisioning-parameter "serial": use NAME=VALUE`},
	} {
		t.Run(name, func(t *testing.T) {
			if name == "bad env value" {
				t.Setenv("OTAFLOW_AGENT_LOG_MAX_BACKUPS", "many")
			}
			var stderr bytes.Buffer
			require.Equal(t, 2, run(tc.args, &stderr))
			require.Contains(t, stderr.String(), tc.want)
		})
	}
}

// TestDevAllowsPlainHTTP: --dev (starter dev, the demo) takes plain HTTP metadata and
// artifacts; the platform is the one given.
func TestDevAllowsPlainHTTP(t *testing.T) {
	trust := trustFlags(t)
	s, err := parse([]string{"--dev", "--trusted-root", trust[1], "--tuf-url", "http://127.0.0.1:4566/tuf/b/", "--os", "raspbian", "--architecture", "armv6l"}, os.Stderr)
	require.NoError(t, err)
	require.True(t, s.slots.AllowHTTP)
	require.Equal(t, "raspbian/armv6l", s.slots.Platform.String())
	s, err = parse(trust, os.Stderr)
	require.NoError(t, err)
	require.False(t, s.slots.AllowHTTP)
}

func TestLogFileIsWritten(t *testing.T) {
	dir := t.TempDir()
	logFile := filepath.Join(dir, "logs", "agent.log")
	var stderr bytes.Buffer
	// No thing name: the agent stops at New, after logging its settings to both outputs.
	require.Equal(t, 2, run(append([]string{"--state-dir", dir, "--log-file", logFile, "--ipc-socket", "off"}, trustFlags(t)...), &stderr))
	raw, err := os.ReadFile(logFile)
	require.NoError(t, err)
	require.Contains(t, string(raw), `"stateDir":"`+dir+`"`)
	require.Contains(t, stderr.String(), "thing name is required")
}

// TestHelpShowsNoSecret: --help prints the flags' constant defaults, never a value the
// environment or the config file holds (a password, say), and names each flag's variable.
func TestHelpShowsNoSecret(t *testing.T) {
	t.Setenv("OTAFLOW_AGENT_PASSWORD", "s3cret-from-env")
	file := filepath.Join(t.TempDir(), "agent.yaml")
	require.NoError(t, os.WriteFile(file, []byte("password: s3cret-from-file\n"), 0o600))
	var stderr bytes.Buffer
	require.Equal(t, 0, run([]string{"--config", file, "--help"}, &stderr))
	require.Contains(t, stderr.String(), "[OTAFLOW_AGENT_PASSWORD]")
	require.NotContains(t, stderr.String(), "s3cret")

	s, err := parse(append([]string{"--config", file}, trustFlags(t)...), os.Stderr)
	require.NoError(t, err)
	require.Equal(t, "s3cret-from-env", s.cfg.Password, "the environment wins over the file")
}
