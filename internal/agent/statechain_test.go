package agent_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/agent"
	"github.com/otaflow/otaflow/internal/agent/preflight"
	"github.com/otaflow/otaflow/internal/agent/slots"
	"github.com/otaflow/otaflow/internal/jobdoc"
	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/localiot/store"
	"github.com/otaflow/otaflow/internal/tuf"
)

// writeScripts creates the four managedRespawn scripts; the one named failing exits 1.
func writeScripts(t *testing.T, dir, failing string, mode os.FileMode) {
	require.NoError(t, os.MkdirAll(dir, 0o755))
	for _, name := range preflight.Scripts {
		body := "#!/bin/sh\necho " + name + " >> " + filepath.Join(dir, "ran.log") + "\n"
		if name == failing {
			body += "echo '" + name + ": service would not stop' >&2\nexit 1\n"
		}
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(body), mode))
		require.NoError(t, os.Chmod(filepath.Join(dir, name), mode))
	}
}

// TestStateChain drives one real update per case and checks the chain of persisted states,
// the job's final status and reason, and the version the device ends on.
func TestStateChain(t *testing.T) {
	r := newInstallRig(t)
	type setup struct {
		in      *agent.SlotInstaller
		doc     *jobdoc.Document
		custom  tuf.Custom // the signed instructions of 3.0.0
		scripts string
		deferTo bool   // a local component defers the update once
		raw     string // a document sent as is
	}
	// Every case starts on core 2.0.0, updated by otaflow from 1.9.0 (still in its slot).
	const full = "installing downloading installing switching switched health-check installed"
	for _, tc := range []struct {
		name    string
		arrange func(s *setup)
		status  store.ExecutionStatus
		reason  string
		chain   string
		ends    string
		ran     string // managedRespawn scripts that ran, in order
	}{
		{name: "success", status: store.ExecSucceeded, chain: full, ends: "3.0.0"},
		{name: "success with managedRespawn scripts", arrange: func(s *setup) { s.in.ManagedRespawn = true },
			status: store.ExecSucceeded, chain: full, ends: "3.0.0", ran: "ggc_pre_update.sh ggc_post_update.sh"},
		{name: "tampered package: other bytes than signed", arrange: func(s *setup) {
			s.doc.Artifact = r.upload("core/3.0.0-other.tar.gz", coreTarball(t, "3.0.0-evil"))
		}, status: store.ExecFailed, reason: "sha256", chain: "installing downloading", ends: "2.0.0"},
		{name: "rejected: unsigned release", arrange: func(s *setup) {
			s.doc.Version, s.doc.Artifact = "3.2.0", r.upload("core/3.2.0.tar.gz", coreTarball(t, "3.2.0"))
		}, status: store.ExecRejected, reason: "core/3.2.0.tar.gz is not a signed target", chain: "installing", ends: "2.0.0"},
		{name: "rejected: below the signed minimum version", arrange: func(s *setup) { s.custom.MinimumVersion = "2.5.0" },
			status: store.ExecRejected, reason: "must be installed over 2.5.0 or newer; this device runs 2.0.0", chain: "installing", ends: "2.0.0"},
		{name: "rejected: a health check in the job document", arrange: func(s *setup) {
			s.raw = `{"type":"otaflow.update","schemaVersion":"1","operation":"update","rolloutId":"r","softwareToUpdate":"core","version":"3.0.0",` +
				`"healthCheck":{"command":["sh","-c","id > /tmp/pwned"]}}`
		}, status: store.ExecRejected, reason: `unknown field "healthCheck"`, chain: "", ends: "2.0.0"},
		{name: "truncated download", arrange: func(s *setup) {
			s.doc.Artifact = r.upload("core/3.0.0-short.tar.gz", coreTarball(t, "3.0.0")[:100]) // fewer bytes than signed
		}, status: store.ExecFailed, reason: "download failed", chain: "installing downloading", ends: "2.0.0"},
		{name: "path traversal in the artifact", arrange: func(s *setup) {
			s.custom.Version = "3.0.0"
			s.doc.Version = "3.0.1"
			s.doc.Artifact = r.sign(tarGz(t, "../../../etc/evil", []byte("x")), tuf.Custom{Software: "core", Version: "3.0.1", OS: "ubuntu", Architecture: "x86_64"})
		}, status: store.ExecFailed, reason: "install into a new slot failed", chain: "installing downloading installing", ends: "2.0.0"},
		{name: "pre-update script fails", arrange: func(s *setup) { s.in.ManagedRespawn, s.scripts = true, "ggc_pre_update.sh" },
			status: store.ExecFailed, reason: "service would not stop", chain: "installing downloading", ends: "2.0.0", ran: "ggc_pre_update.sh"},
		{name: "restart fails", arrange: func(s *setup) { s.in.Restart = []string{"sh", "-c", "echo unit not found; exit 5"} },
			status: store.ExecFailed, reason: "restarting 3.0.0 failed", chain: "installing downloading installing switching switched", ends: "2.0.0"},
		{name: "restart policy none skips the restart", arrange: func(s *setup) {
			s.in.Restart = []string{"sh", "-c", "exit 5"}
			s.custom.RestartPolicy = jobdoc.RestartNone
		}, status: store.ExecSucceeded, chain: full, ends: "3.0.0"},
		{name: "health check fails", arrange: func(s *setup) { s.custom.HealthCheck.Command = []string{"false"} },
			status: store.ExecFailed, reason: "health check of 3.0.0 failed", chain: "installing downloading installing switching switched health-check", ends: "2.0.0"},
		{name: "post-update script fails", arrange: func(s *setup) { s.in.ManagedRespawn, s.scripts = true, "ggc_post_update.sh" },
			status: store.ExecFailed, reason: "rolled back to 2.0.0", chain: "installing downloading installing switching switched health-check", ends: "2.0.0",
			ran: "ggc_pre_update.sh ggc_post_update.sh"},
		{name: "rejected: proxy configured", arrange: func(s *setup) { s.in.Env = append(s.in.Env, "HTTPS_PROXY=http://proxy:3128") },
			status: store.ExecRejected, reason: "proxy", chain: "installing", ends: "2.0.0"},
		{name: "rejected: scripts writable by others", arrange: func(s *setup) { s.in.ManagedRespawn, s.scripts = true, "mode" },
			status: store.ExecRejected, reason: "writable by nobody else", chain: "installing", ends: "2.0.0"},
		{name: "rejected: downgrade", arrange: func(s *setup) { s.doc.Version, s.doc.Artifact = "1.5.0", r.artifact("1.5.0") },
			status: store.ExecRejected, reason: "downgrade needs a rollback job", chain: "installing", ends: "2.0.0"},
		{name: "rollback job may go back to the previous version", arrange: func(s *setup) {
			s.doc.Operation, s.doc.Version, s.doc.Artifact = jobdoc.OpRollback, "1.9.0", r.artifact("1.9.0")
		}, status: store.ExecSucceeded, chain: full, ends: "1.9.0"},
		{name: "rejected: rollback to a version the device did not run before", arrange: func(s *setup) {
			s.doc.Operation, s.doc.Version, s.doc.Artifact = jobdoc.OpRollback, "1.5.0", r.artifact("1.5.0")
		}, status: store.ExecRejected, reason: "may only return core to the version it ran before this one (1.9.0)", chain: "", ends: "2.0.0"},
		{name: "rollback to a version still in its slot", arrange: func(s *setup) {
			s.doc.Operation, s.doc.Version, s.doc.Artifact = jobdoc.OpRollback, "1.9.0", nil
		}, status: store.ExecSucceeded, chain: "installing switching switched health-check installed", ends: "1.9.0"},
		{name: "rejected: no artifact and not installed", arrange: func(s *setup) { s.doc.Version, s.doc.Artifact = "4.0.0", nil },
			status: store.ExecRejected, reason: "not installed on this device", chain: "installing", ends: "2.0.0"},
		{name: "deferred once by a component", arrange: func(s *setup) { s.deferTo = true },
			status: store.ExecSucceeded, chain: "deferred " + full, ends: "3.0.0"},
		{name: "already on the version", arrange: func(s *setup) { s.doc.Version = "2.0.0" },
			status: store.ExecSucceeded, chain: "", ends: "2.0.0"},
		{name: "invalid document", arrange: func(s *setup) {
			s.raw = `{"type":"otaflow.update","schemaVersion":"7","operation":"update","rolloutId":"r","softwareToUpdate":"core","version":"3.0.0"}`
		},
			status: store.ExecRejected, reason: "update the agent first", chain: "", ends: "2.0.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, scripts := t.TempDir(), t.TempDir()
			in := r.installer(root)
			in.ScriptsDir, in.ScriptsOwner = scripts, os.Getuid()
			s := &setup{in: in, custom: tuf.Custom{Software: "core", Version: "3.0.0", OS: "ubuntu", Architecture: "x86_64", HealthCheck: &tuf.HealthCheck{Command: []string{"true"}}},
				doc: &jobdoc.Document{Type: jobdoc.Type, SchemaVersion: jobdoc.SchemaVersion, Operation: jobdoc.OpUpdate, RolloutID: "r",
					SoftwareToUpdate: jobdoc.SoftwareCore, Version: "3.0.0"}}
			if tc.arrange != nil {
				tc.arrange(s)
			}
			// 3.0.0 is signed with this case's instructions; a case may point elsewhere.
			signed := r.sign(coreTarball(t, "3.0.0"), s.custom)
			if s.doc.Artifact == nil && s.doc.Version == "3.0.0" {
				s.doc.Artifact = signed
			}
			mode := os.FileMode(0o700)
			if s.scripts == "mode" {
				mode = 0o777
			}
			writeScripts(t, scripts, s.scripts, mode)
			// Start from 2.0.0 installed in its slot.
			core := slots.Slots{Root: filepath.Join(root, "core")}
			require.NoError(t, os.MkdirAll(core.Dir("1.9.0"), 0o755))
			require.NoError(t, os.MkdirAll(core.Dir("2.0.0"), 0o755))
			require.NoError(t, core.Switch("2.0.0"))
			state := t.TempDir()
			require.NoError(t, os.WriteFile(filepath.Join(state, "state.json"), []byte(`{"installed":{"core":{"version":"2.0.0","previous":"1.9.0"}}}`), 0o600))

			var mu sync.Mutex
			var chain []string
			socket := ""
			if s.deferTo {
				socket = filepath.Join(state, "agent.sock")
			}
			a, err := agent.New(agent.Config{ThingName: "dev-1", BrokerURL: r.brokerURL, StateDir: state, Logger: zerolog.Nop(), Installer: s.in, IPCSocket: socket,
				OnStateChange: func(st agent.State) {
					mu.Lock()
					defer mu.Unlock()
					if len(chain) == 0 || chain[len(chain)-1] != string(st.Step) {
						chain = append(chain, string(st.Step))
					}
				}})
			require.NoError(t, err)
			runAgent(t, a)
			if s.deferTo {
				c := dialComponent(t, socket, "com.example.Cache")
				go func() {
					n := c.next()
					c.send(agent.IPCMessage{Op: "defer", JobID: n.JobID, RecheckAfterMs: 100, Message: "writing cache"})
					n = c.next()
					c.send(agent.IPCMessage{Op: "ack", JobID: n.JobID})
				}()
			}
			jobID := strings.NewReplacer(" ", "-", ":", "").Replace(tc.name)
			if s.raw != "" {
				_, err := r.svc.CreateJob(localiot.CreateJobInput{JobID: jobID, Targets: []string{"dev-1"}, Document: s.raw})
				require.NoError(t, err)
			} else {
				r.createDoc(jobID, *s.doc)
			}
			e := waitTerminal(t, r.svc, jobID, "dev-1")
			require.Equal(t, tc.status, e.Status, "reason: %s", e.StatusDetails["reason"])
			require.Contains(t, e.StatusDetails["reason"], tc.reason)
			require.NotContains(t, e.StatusDetails["reason"], "Signature=", "a reason never holds a presigned URL's credentials")
			if tc.status != store.ExecSucceeded {
				left, _ := os.ReadDir(filepath.Join(root, "downloads"))
				require.Empty(t, left, "a failed update leaves no download behind")
			}
			require.Equal(t, tc.ends, core.Current(), "the device runs exactly one version")
			require.Equal(t, tc.ends, a.InstalledVersion("core"))
			if tc.status == store.ExecSucceeded {
				require.Equal(t, tc.ends, e.StatusDetails["installedVersion"])
			}
			// The report goes out before the state is cleared: wait for the clear.
			var got []string
			require.Eventually(t, func() bool {
				mu.Lock()
				defer mu.Unlock()
				got = slices.Clone(chain)
				return len(got) > 0 && got[len(got)-1] == ""
			}, 5*time.Second, time.Millisecond)
			want := []string{}
			if tc.chain != "" {
				want = strings.Fields(tc.chain)
			}
			// Every job ends with the state cleared for the next one.
			require.Equal(t, append(want, ""), got)
			ran, _ := os.ReadFile(filepath.Join(scripts, "ran.log"))
			require.Equal(t, tc.ran, strings.Join(strings.Fields(string(ran)), " "))
		})
	}
}
