package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestConfigFileFlagsAndEnvironment(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "agent.yaml")
	require.NoError(t, os.WriteFile(file, []byte("thingName: from-file\nbroker: tcp://file:1883\nstateDir: "+dir+"\nmaxDeferral: 5m\nlogLevel: debug\n"), 0o600))

	s, err := parse([]string{"--config", file}, os.Stderr)
	require.NoError(t, err)
	require.Equal(t, "from-file", s.cfg.ThingName)
	require.Equal(t, "tcp://file:1883", s.cfg.BrokerURL)
	require.Equal(t, 5*time.Minute, s.cfg.MaxDeferral)
	require.Equal(t, "debug", s.log.Level)
	require.Equal(t, filepath.Join(dir, "agent.sock"), s.cfg.IPCSocket)
	require.Equal(t, version, s.cfg.AgentVersion)

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
	require.NoError(t, os.WriteFile(jsonFile, []byte(`{"thingName":"j","broker":"tcp://j:1883"}`), 0o600))
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
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"misspelt key":     {[]string{"--config", write("thingNme: x\n")}, `unknown field "thingNme"`},
		"missing file":     {[]string{"--config", filepath.Join(dir, "nope.yaml")}, "read agent config"},
		"bad duration":     {[]string{"--max-deferral", "soon"}, "--max-deferral"},
		"cert over tcp":    {[]string{"--cert", write("x"), "--key", write("x")}, "load device certificate"},
		"no key for roots": {[]string{"--install-root", dir}, "--public-key is required"},
		"bad log level":    {[]string{"--log-level", "loud", "--thing-name", "d", "--state-dir", dir, "--ipc-socket", "off"}, "log level"},
	} {
		t.Run(name, func(t *testing.T) {
			var stderr bytes.Buffer
			require.Equal(t, 2, run(tc.args, &stderr))
			require.Contains(t, stderr.String(), tc.want)
		})
	}
}

func TestLogFileIsWritten(t *testing.T) {
	dir := t.TempDir()
	logFile := filepath.Join(dir, "logs", "agent.log")
	var stderr bytes.Buffer
	// No thing name: the agent stops at New, after logging its settings to both outputs.
	require.Equal(t, 2, run([]string{"--state-dir", dir, "--log-file", logFile, "--ipc-socket", "off"}, &stderr))
	raw, err := os.ReadFile(logFile)
	require.NoError(t, err)
	require.Contains(t, string(raw), `"stateDir":"`+dir+`"`)
	require.Contains(t, stderr.String(), "thing name is required")
}
