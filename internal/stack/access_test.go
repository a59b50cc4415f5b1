package stack_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/release"
	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/internal/stack"
	"github.com/otaflow/otaflow/workflows/contract"
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

	operatorSecret := strings.TrimPrefix(operator[1], "OTAFLOW_SECRET_ACCESS_KEY=")
	_, stderr, err = awsCLIAs(t, s.JobsURL, operatorID, operatorSecret, "iot", "create-thing", "--thing-name", "pi-0")
	require.NoError(t, err, "an operator registers things with the AWS CLI: %s", stderr)
	run(operator, "thing", "add", "pi-1", "pi-2")
	require.Contains(t, run(operator, "access", "whoami"), operatorID+": operator (may read, operate)")
	_, errText, err := runStarterEnv(t, bin, s, operator, "access", "create", "--role", "admin")
	require.Error(t, err)
	require.Contains(t, errText, "AccessDeniedException")
	_, errText, err = runStarterEnv(t, bin, s, viewer, "thing", "add", "pi-3")
	require.Error(t, err)
	require.Contains(t, errText, "needs the operator or admin role")

	// A release manager publishes a release, with the TUF root key offline (not on this
	// machine at all); an operator may not publish.
	_, _, releaser := issue("release-manager")
	repo := filepath.Join(t.TempDir(), "repo")
	run(nil, "release", "init", "--repo", repo)
	roots, err := filepath.Glob(filepath.Join(repo, "keys", "root-*"))
	require.NoError(t, err)
	require.NotEmpty(t, roots)
	offline := t.TempDir()
	for _, k := range roots {
		require.NoError(t, os.Rename(k, filepath.Join(offline, filepath.Base(k))))
	}
	pkg := filepath.Join(t.TempDir(), "core.tar.gz")
	data, err := release.Pack(release.File{Name: "bin/core", Mode: 0o755, Body: []byte("core 2.0.0")})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(pkg, data, 0o644))
	publish := []string{"release", "publish", "--repo", repo, "--bucket", stack.ReleaseBucket, "--file", pkg, "--software", "core",
		"--version", "2.0.0", "--os", "ubuntu", "--architecture", "x86_64", "-f", filepath.Join(t.TempDir(), "rel.json")}
	_, errText, err = runStarterEnv(t, bin, s, operator, publish...)
	require.Error(t, err, "an operator may not publish")
	require.Contains(t, errText, "may not PutObject: it needs the release-manager or admin role")
	run(releaser, publish...)

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
	require.ElementsMatch(t, []string{viewerID + " CreateThing", operatorID + " CreateAccessKey", viewerID + " CreateThing", operatorID + " PutObject"}, denied)
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

// The audit trail of a team's rollout, read back through the CLI and the console: a CI key
// starts a rollout under the two-person rule with the CLI; the same key's approval is refused;
// bob approves in the console (Chromium, signed in as a console user), pauses it, and cancels it
// with rollback; a viewer signed in cannot steer. The log, the console's audit page and the
// rollout's own history agree on who did what.
func TestTeamAuditTrail(t *testing.T) {
	bin := starterCLI(t)
	ctx := context.Background()
	s, err := stack.Start(ctx, stack.Options{DataDir: t.TempDir(), InMemoryTemporal: true, UIPort: -1, Logger: testLogger()})
	require.NoError(t, err)
	defer s.Close()
	arns, err := s.StartDevices(ctx, 4, "1.10.2", 0)
	require.NoError(t, err)
	for name, role := range map[string]localiot.Role{"bob": localiot.RoleOperator, "victor": localiot.RoleViewer} {
		_, err := s.Jobs.CreateUser(localiot.UserInput{Name: name, Password: "the password of " + name + " 2026", Role: role})
		require.NoError(t, err)
	}
	run := func(env []string, args ...string) (string, string, error) {
		t.Helper()
		return runStarterEnv(t, bin, s, env, args...)
	}
	out, stderr, err := run(nil, "access", "create", "--role", "operator", "--description", "CI", "-o", "json")
	require.NoError(t, err, stderr)
	var ci struct{ AccessKeyID, SecretAccessKey string }
	require.NoError(t, json.Unmarshal([]byte(out), &ci))
	ciEnv := []string{"OTAFLOW_ACCESS_KEY_ID=" + ci.AccessKeyID, "OTAFLOW_SECRET_ACCESS_KEY=" + ci.SecretAccessKey}

	_, err = s.PublishRelease(ctx, "core", "1.11.6")
	require.NoError(t, err)
	targets, _ := json.Marshal(arns)
	_, stderr, err = run(ciEnv, "create-software-update-job", "--amzn-client-token", "team-1", "--update-targets", string(targets),
		"--update-targets-architecture", "x86_64", "--update-targets-operating-system", "ubuntu", "--software-to-update", "core",
		"--s3-url-signer-role", "arn:aws:iam::000000000000:role/signer", "--waves", "1,2,100%", "--approve-waves", "--two-person")
	require.NoError(t, err, stderr)
	require.Eventually(t, func() bool {
		st, err := rolloutclient.Status(ctx, s.Client, "team-1")
		return err == nil && st.State == contract.StateAwaiting
	}, time.Minute, 100*time.Millisecond, "the first wave done, the rollout waits for approval")
	_, stderr, err = run(ciEnv, "rollout", "approve", "team-1", "--reason", "LGTM")
	require.Error(t, err, "the starter may not approve")
	require.Contains(t, stderr, "two-person rule: "+ci.AccessKeyID+" started rollout team-1 and may not approve its waves")
	// A key limited to another site's thing group may not steer this rollout of other devices.
	_, err = s.Jobs.CreateThingGroup("paris", "", localiot.GroupProperties{})
	require.NoError(t, err)
	out, stderr, err = run(nil, "access", "create", "--role", "operator", "--group", "paris", "-o", "json")
	require.NoError(t, err, stderr)
	var paris struct{ AccessKeyID, SecretAccessKey string }
	require.NoError(t, json.Unmarshal([]byte(out), &paris))
	_, stderr, err = run([]string{"OTAFLOW_ACCESS_KEY_ID=" + paris.AccessKeyID, "OTAFLOW_SECRET_ACCESS_KEY=" + paris.SecretAccessKey}, "rollout", "pause", "team-1")
	require.Error(t, err)
	require.Contains(t, stderr, "is outside the thing groups "+paris.AccessKeyID+" may change (paris)")

	tab := chromium(t)
	tab, cancel := context.WithTimeout(tab, 3*time.Minute)
	defer cancel()
	text, eventually := consolePage(t, tab)
	visible := func(sel string) bool {
		v, err := chromedp.Run(tab, chromedp.Evaluate[bool](fmt.Sprintf(`!document.querySelector(%q).hidden`, sel)))
		return err == nil && v
	}
	enabled := func(action string) bool {
		d, err := chromedp.Run(tab, chromedp.Evaluate[bool](fmt.Sprintf(`document.querySelector('button[data-action=%q]').disabled`, action)))
		return err == nil && !d
	}
	signIn := func(user, pw string) {
		t.Helper()
		eventually("the sign-in form", func() bool { return visible("#signin") })
		require.NoError(t, chromedp.Do(tab, chromedp.SetValue("#signin-user", user)))
		require.NoError(t, chromedp.Do(tab, chromedp.SetValue("#signin-password", pw)))
		require.NoError(t, chromedp.Do(tab, chromedp.Click(`#signin-form button[type="submit"]`)))
		eventually(user+" signed in", func() bool { return strings.HasPrefix(text("#whoami"), user+" (") })
	}
	require.NoError(t, chromedp.Do(tab, chromedp.Navigate(s.ConsoleURL+"#rollout=team-1")))
	// Users exist, so the stack's console asks for a sign-in; a wrong password is refused.
	eventually("the sign-in form", func() bool { return visible("#signin") })
	require.NoError(t, chromedp.Do(tab, chromedp.SetValue("#signin-user", "bob")))
	require.NoError(t, chromedp.Do(tab, chromedp.SetValue("#signin-password", "wrong")))
	require.NoError(t, chromedp.Do(tab, chromedp.Click(`#signin-form button[type="submit"]`)))
	eventually("the refusal", func() bool { return text("#signin-error") == "wrong user name or password" })
	signIn("bob", "the password of bob 2026")
	eventually("the rollout waiting for approval", func() bool { return text("#detail-state") == contract.StateAwaiting })
	eventually("approve offered", func() bool { return enabled("approve") })
	require.NoError(t, chromedp.Do(tab, chromedp.Click(`button[data-action="approve"]`)))
	eventually("the approval's answer", func() bool { return strings.Contains(text("#flash"), "approve: done") })
	eventually("the second wave done, the third waiting", func() bool {
		st, err := rolloutclient.Status(ctx, s.Client, "team-1")
		return err == nil && st.State == contract.StateAwaiting && st.CurrentWave == 2
	})
	eventually("pause offered", func() bool { return enabled("pause") })
	require.NoError(t, chromedp.Do(tab, chromedp.Click(`button[data-action="pause"]`)))
	eventually("paused", func() bool { return strings.Contains(text("#detail-state"), "(paused)") })
	// Cancel asks for confirmation; the test confirms.
	_, err = chromedp.Run(tab, chromedp.Evaluate[bool](`window.confirm = () => true; true`))
	require.NoError(t, err)
	eventually("cancel and roll back offered", func() bool { return enabled("cancel-rollback") })
	require.NoError(t, chromedp.Do(tab, chromedp.Click(`button[data-action="cancel-rollback"]`)))
	eventually("canceled", func() bool { return text("#detail-state") == contract.StateCanceled })
	require.Contains(t, text("#detail-message"), "canceled by bob")

	// The rollout's history names them.
	st, err := rolloutclient.Status(ctx, s.Client, "team-1")
	require.NoError(t, err)
	require.Len(t, st.Approvals, 1)
	require.Equal(t, "bob", st.Approvals[0].By)
	require.Equal(t, 2, st.Approvals[0].Wave)

	// The audit page shows the trail; a viewer sees it and cannot steer.
	eventually("the audit page", func() bool {
		log := text("#audit-log")
		return strings.Contains(log, "rollout.cancel-rollback") && strings.Contains(log, "bob (operator)")
	})
	require.NoError(t, chromedp.Do(tab, chromedp.Click("#sign-out")))
	signIn("victor", "the password of victor 2026")
	eventually("the rollout's page", func() bool { return text("#detail-state") == contract.StateCanceled })
	eventually("the roll-back button off for a viewer", func() bool {
		title, err := chromedp.Run(tab, chromedp.Evaluate[string](`document.querySelector('button[data-action="rollback"]').title`))
		return err == nil && strings.Contains(title, "victor (viewer) may not steer rollouts") && !enabled("rollback")
	})

	// The CLI reads the same trail back, oldest first.
	out, stderr, err = run(nil, "audit", "list", "--resource", "/rollouts", "--oldest", "-o", "json")
	require.NoError(t, err, stderr)
	var listed struct {
		Entries []struct{ Who, Via, Action, Outcome, Reason string }
	}
	require.NoError(t, json.Unmarshal([]byte(out), &listed))
	var trail []string
	for _, e := range listed.Entries {
		trail = append(trail, strings.Join([]string{e.Who, e.Via, e.Action, e.Outcome}, " "))
	}
	require.Equal(t, []string{
		ci.AccessKeyID + " rest StartRollout ok",
		ci.AccessKeyID + " rest rollout.approve ConflictException",
		paris.AccessKeyID + " rest rollout.pause denied",
		"bob console rollout.approve ok",
		"bob console rollout.pause ok",
		"bob console rollout.cancel-rollback ok",
	}, trail)
	require.Equal(t, "LGTM", listed.Entries[1].Reason)
	signIns, _, err := s.Jobs.AuditLog(localiot.AuditQuery{Action: "sign-in", Oldest: true})
	require.NoError(t, err)
	var who []string
	for _, e := range signIns {
		who = append(who, e.Who+" "+e.Outcome)
	}
	require.Equal(t, []string{"bob refused", "bob ok", "victor ok"}, who)
}
