package preflight_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/agent/preflight"
)

func scripts(t *testing.T, mode os.FileMode, exit string) string {
	dir := t.TempDir()
	for _, s := range preflight.Scripts {
		require.NoError(t, os.WriteFile(filepath.Join(dir, s), []byte("#!/bin/sh\necho "+s+"\nexit "+exit+"\n"), mode))
		require.NoError(t, os.Chmod(filepath.Join(dir, s), mode))
	}
	return dir
}

func TestCheck(t *testing.T) {
	good := preflight.Config{InstallDir: t.TempDir(), ArtifactSize: 1 << 20, Env: []string{"INVOCATION_ID=abc"}}
	require.NoError(t, preflight.Check(good))

	c := good
	c.ArtifactSize = 1 << 62
	require.ErrorContains(t, preflight.Check(c), "not enough free disk")

	c = good
	c.Env = []string{"INVOCATION_ID=abc", "HTTPS_PROXY=http://proxy:3128"}
	require.ErrorContains(t, preflight.Check(c), "proxy")

	c = good
	c.Env = []string{}
	require.ErrorContains(t, preflight.Check(c), "not running under an init system")
	require.ErrorContains(t, preflight.Check(c), "--managed-respawn", "the error names the ways out")
	require.ErrorContains(t, preflight.Check(c), "--restart-command")
	c.RestartCommand = true
	require.NoError(t, preflight.Check(c), "a restart command restarts the software without systemd")

	c = good
	c.Env, c.ManagedRespawn, c.OwnerUID = []string{}, true, os.Getuid()
	c.ScriptsDir = scripts(t, 0o700, "0")
	require.NoError(t, preflight.Check(c), "managedRespawn with proper scripts needs no systemd")

	c.ScriptsDir = scripts(t, 0o755, "0")
	require.ErrorContains(t, preflight.Check(c), "executable by its owner only")
	c.ScriptsDir = t.TempDir()
	require.ErrorContains(t, preflight.Check(c), "ggc_pre_update.sh is missing")
	c.ScriptsDir, c.OwnerUID = scripts(t, 0o700, "0"), os.Getuid()+1
	require.ErrorContains(t, preflight.Check(c), "must be owned by uid")

	ro := filepath.Join(t.TempDir(), "ro")
	require.NoError(t, os.MkdirAll(ro, 0o500))
	c = good
	c.InstallDir = filepath.Join(ro, "x")
	if os.Getuid() != 0 { // root writes anywhere
		require.ErrorContains(t, preflight.Check(c), "cannot be created")
	}
}

func TestRunScriptAndLock(t *testing.T) {
	dir := scripts(t, 0o700, "0")
	require.NoError(t, preflight.RunScript(dir, "ggc_pre_update.sh"))
	bad := scripts(t, 0o700, "3")
	err := preflight.RunScript(bad, "ota_post_update.sh")
	require.ErrorContains(t, err, "ota_post_update.sh failed")
	require.ErrorContains(t, err, "exit status 3")

	lock := filepath.Join(t.TempDir(), "agent.lock")
	release, err := preflight.Lock(lock)
	require.NoError(t, err)
	_, err = preflight.Lock(lock)
	require.ErrorContains(t, err, "another otaflow agent is running")
	release()
	release2, err := preflight.Lock(lock)
	require.NoError(t, err)
	release2()
}
