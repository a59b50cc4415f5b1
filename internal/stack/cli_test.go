package stack_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"github.com/otaflow/otaflow/internal/stack"
)

var starterBuild struct {
	once sync.Once
	path string
	out  []byte
	err  error
}

// starterCLI builds the starter CLI once for this test binary.
func starterCLI(t *testing.T) string {
	t.Helper()
	starterBuild.once.Do(func() {
		dir, err := os.MkdirTemp("", "otaflow-starter-")
		if err != nil {
			starterBuild.err = err
			return
		}
		starterBuild.path = filepath.Join(dir, "starter")
		cmd := exec.Command("go", "build", "-o", starterBuild.path, "github.com/otaflow/otaflow/starter")
		starterBuild.out, starterBuild.err = cmd.CombinedOutput()
	})
	require.NoError(t, starterBuild.err, "go build ./starter: %s", starterBuild.out)
	return starterBuild.path
}

// runStarter runs the starter CLI against s, as a user with the stack's addresses in the
// environment, within two minutes.
func runStarter(t *testing.T, bin string, s *stack.Stack, args ...string) (string, string, error) {
	t.Helper()
	return runStarterEnv(t, bin, s, nil, args...)
}

// runStarterEnv is runStarter with more environment (later values win: another access key).
func runStarterEnv(t *testing.T, bin string, s *stack.Stack, env []string, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(append(os.Environ(), "TEMPORAL_ADDRESS="+s.Temporal.FrontendAddr(), "OTAFLOW_JOBS_ENDPOINT="+s.JobsURL), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	require.NoError(t, cmd.Start())
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return stdout.String(), stderr.String(), err
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		t.Fatalf("starter %s did not finish in 2 minutes: %s %s", strings.Join(args, " "), stdout.String(), stderr.String())
		return "", "", nil
	}
}

// TestStarterCLI drives a rollout, a schedule and a deployment through the starter CLI as a
// user would, against a local stack, and checks that bad input is refused with a clear error
// before anything is created.
func TestStarterCLI(t *testing.T) {
	bin := starterCLI(t)
	ctx := context.Background()
	dataDir := t.TempDir()
	s, err := stack.Start(ctx, stack.Options{DataDir: dataDir, InMemoryTemporal: true, UIPort: -1, Logger: testLogger()})
	require.NoError(t, err)
	defer s.Close()
	arns, err := s.StartDevices(ctx, 3, "1.10.2", 0)
	require.NoError(t, err)
	targets, _ := json.Marshal(arns)

	run := func(args ...string) (string, string, error) {
		t.Helper()
		return runStarter(t, bin, s, args...)
	}
	update := []string{"--update-targets", string(targets), "--update-targets-architecture", "x86_64",
		"--update-targets-operating-system", "ubuntu", "--software-to-update", "core",
		"--s3-url-signer-role", "arn:aws:iam::000000000000:role/signer"}

	// A mistyped command fails instead of printing help with exit 0; steering a rollout that
	// does not exist says why.
	for _, args := range [][]string{{"rollout", "statsu", "x"}, {"nonsense"}, {"schedule", "lst"}} {
		_, stderr, err := run(args...)
		require.Error(t, err, "starter %v", args)
		require.Contains(t, stderr, "unknown command", "starter %v", args)
	}
	_, stderr, err := run("rollout", "cancel", "no-such-rollout")
	require.Error(t, err)
	require.NotContains(t, stderr, "%!", "a formatting error instead of the reason")
	require.Contains(t, stderr, "no such rollout")

	// Bad input: a clear error, a non-zero exit, and no job.
	bad := slices.Clone(update)
	bad[slices.Index(bad, "x86_64")] = "sparc"
	_, stderr, err = run(append([]string{"create-software-update-job", "--amzn-client-token", "bad-arch"}, bad...)...)
	require.Error(t, err)
	require.Contains(t, stderr, "sparc")
	jobs, err := s.IoT.ListJobs(ctx, &iot.ListJobsInput{})
	require.NoError(t, err)
	require.Empty(t, jobs.Jobs, "an invalid request created a job")

	// Nothing published: refused before anything starts, saying what to publish (devices,
	// simulated ones too, refuse a job with nothing to download); no job.
	_, stderr, err = run(append([]string{"create-software-update-job", "--amzn-client-token", "nothing-published"}, update...)...)
	require.Error(t, err)
	require.Contains(t, stderr, "bucket otaflow-releases has no published release of core (none at all): publish one")
	_, stderr, err = run(append([]string{"create-software-update-job", "--amzn-client-token", "never-published", "--software-version", "1.11.7"}, update...)...)
	require.Error(t, err)
	require.Contains(t, stderr, "core 1.11.7 was never published to bucket otaflow-releases (published: none")
	jobs, err = s.IoT.ListJobs(ctx, &iot.ListJobsInput{})
	require.NoError(t, err)
	require.Empty(t, jobs.Jobs, "a refused request created a job")
	_, err = s.PublishRelease(ctx, "core", "1.11.6")
	require.NoError(t, err)

	// A rollout, waited for: the seed's output, then the outcome on stderr.
	out, stderr, err := run(append([]string{"create-software-update-job", "--amzn-client-token", "cli-1", "--wait"}, update...)...)
	require.NoError(t, err, stderr)
	var created struct{ IotJobId, IotJobArn, PlatformSoftwareVersion string }
	require.NoError(t, json.Unmarshal([]byte(out), &created), out)
	require.NotEmpty(t, created.IotJobId)
	require.Equal(t, "1.11.6", created.PlatformSoftwareVersion)
	require.Contains(t, stderr, "SUCCEEDED")

	out, stderr, err = run("rollout", "status", "cli-1", "-o", "json")
	require.NoError(t, err, stderr)
	var status struct {
		State  string
		Counts struct{ Succeeded int }
	}
	require.NoError(t, json.Unmarshal([]byte(out), &status), out)
	require.Equal(t, "SUCCEEDED", status.State)
	require.Equal(t, 3, status.Counts.Succeeded)

	require.Eventually(t, func() bool { // the visibility store catches up
		out, _, err := run("rollout", "list", "-o", "json")
		return err == nil && strings.Contains(out, `"rolloutId":"cli-1"`)
	}, 30*time.Second, 500*time.Millisecond)

	// One client token, one update, on every path: the same token with other targets is
	// refused by the CLI, and the REST API (the AWS CLI's greengrass command) answers the same
	// request with the CLI's own job.
	one, _ := json.Marshal(arns[:1])
	other := slices.Clone(update)
	other[slices.Index(other, string(targets))] = string(one)
	_, stderr, err = run(append([]string{"create-software-update-job", "--amzn-client-token", "cli-1"}, other...)...)
	require.Error(t, err, "a used token with other targets")
	require.Contains(t, stderr, "already used for a different request")
	got, stderr2, err := awsCLI(t, s.JobsURL, "greengrass", "create-software-update-job", "--update-targets-architecture", "x86_64",
		"--update-targets", string(targets), "--update-targets-operating-system", "ubuntu", "--software-to-update", "core",
		"--s3-url-signer-role", "arn:aws:iam::000000000000:role/signer", "--amzn-client-token", "cli-1")
	require.NoError(t, err, string(stderr2))
	var again struct{ IotJobId string }
	require.NoError(t, json.Unmarshal(got, &again), string(got))
	require.Equal(t, created.IotJobId, again.IotJobId, "the REST path found the CLI's update")
	_, stderr2, err = awsCLI(t, s.JobsURL, "greengrass", "create-software-update-job", "--update-targets-architecture", "x86_64",
		"--update-targets", string(one), "--update-targets-operating-system", "ubuntu", "--software-to-update", "core",
		"--s3-url-signer-role", "arn:aws:iam::000000000000:role/signer", "--amzn-client-token", "cli-1")
	require.Error(t, err, "the REST path refuses the token with other targets too")
	require.Contains(t, string(stderr2), "already used")

	// An output format the command does not have is refused, not ignored.
	_, stderr, err = run("rollout", "status", "cli-1", "-o", "yaml")
	require.Error(t, err)
	require.Contains(t, stderr, "use text or json")

	// Roll the finished rollout back: every device returns to the version it had.
	out, stderr, err = run("rollout", "rollback", "cli-1", "--wait")
	require.NoError(t, err, stderr)
	require.Contains(t, out, "3 of 3 devices rolled back")
	for _, a := range s.Agents() {
		require.Equal(t, "1.10.2", a.InstalledVersion("core"))
	}
	// Registering a fleet and grouping it, without the AWS CLI: 30 things, one group in a
	// parent, an existing thing joining too.
	var names []string
	for i := range 30 {
		names = append(names, fmt.Sprintf("site-%02d", i))
	}
	_, stderr, err = run(append([]string{"thing", "add", "--group", "berlin", "--attribute", "site=berlin"}, names...)...)
	require.NoError(t, err, stderr)
	require.Contains(t, stderr, "registered 30 new of 30 things; all are in berlin")
	_, stderr, err = run("thing", "group", "berlin-canary", "--parent", "europe")
	require.NoError(t, err, stderr)
	_, stderr, err = run("thing", "add", "site-00", stack.Device(1), "--group", "berlin-canary")
	require.NoError(t, err, stderr)
	require.Contains(t, stderr, "registered 0 new of 2 things")
	// From a file, one name per line: comments and blank lines skipped, a bad line named.
	batch := filepath.Join(t.TempDir(), "batch.txt")
	require.NoError(t, os.WriteFile(batch, []byte("# line 3, December\nline3-a\n\nline3-b\n"), 0o644))
	_, stderr, err = run("thing", "add", "--file", batch, "--group", "line-3")
	require.NoError(t, err, stderr)
	require.Contains(t, stderr, "registered 2 new of 2 things; all are in line-3")
	require.NoError(t, os.WriteFile(batch, []byte("ok-name\nnot/a/thing\n"), 0o644))
	_, stderr, err = run("thing", "add", "--file", batch)
	require.Error(t, err)
	require.Contains(t, stderr, "line 2: \"not/a/thing\" is not a thing name")
	members, err := s.IoT.ListThingsInThingGroup(ctx, &iot.ListThingsInThingGroupInput{ThingGroupName: aws.String("berlin"), MaxResults: aws.Int32(100)})
	require.NoError(t, err)
	require.Len(t, members.Things, 30)
	canary, err := s.IoT.DescribeThingGroup(ctx, &iot.DescribeThingGroupInput{ThingGroupName: aws.String("berlin-canary")})
	require.NoError(t, err)
	require.Equal(t, "europe", aws.ToString(canary.ThingGroupMetadata.ParentGroupName))
	members, err = s.IoT.ListThingsInThingGroup(ctx, &iot.ListThingsInThingGroupInput{ThingGroupName: aws.String("berlin-canary")})
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"site-00", stack.Device(1)}, members.Things)
	thing, err := s.IoT.DescribeThing(ctx, &iot.DescribeThingInput{ThingName: aws.String("site-07")})
	require.NoError(t, err)
	require.Equal(t, "berlin", thing.Attributes["site"])

	// A device certificate: a key made here, its certificate from the jobs service (ACTIVE),
	// the thing registered and the certificate attached to it.
	certs := t.TempDir()
	_, stderr, err = run("device-cert", "--data-dir", dataDir, "--thing", "dev-x", "--out", certs)
	require.NoError(t, err, stderr)
	require.FileExists(t, filepath.Join(certs, "dev-x.crt"))
	require.Contains(t, stderr, "ACTIVE, attached to thing dev-x")
	principals, err := s.Jobs.ListThingPrincipals("dev-x")
	require.NoError(t, err)
	require.Len(t, principals, 1)

	// Steering an ended rollout says it ended, in the rollout's words, not Temporal's.
	_, stderr, err = run("rollout", "pause", "cli-1")
	require.Error(t, err)
	require.Contains(t, stderr, "rollout cli-1 has ended (SUCCEEDED): there is nothing left to pause")
	require.NotContains(t, stderr, "workflow execution")
	// Asking again says so, instead of "started".
	out, stderr, err = run("rollout", "rollback", "cli-1")
	require.NoError(t, err, stderr)
	require.Contains(t, out, "rollback of cli-1 was already started")
	// The rollout's status shows its rollback, run as a workflow of its own after it ended.
	out, stderr, err = run("rollout", "status", "cli-1")
	require.NoError(t, err, stderr)
	require.Contains(t, out, "rollback: 3 of 3 devices rolled back, 0 failed")
	_, stderr, err = run("rollout", "rollback", "no-such-rollout")
	require.Error(t, err)
	require.Contains(t, stderr, "no such rollout")

	// A failing device: --wait shows progress, then names the device and its reason.
	s.SetDeviceFaults([]string{stack.Device(2)}, nil)
	_, stderr, err = run(append([]string{"create-software-update-job", "--amzn-client-token", "cli-2", "--wait"}, update...)...)
	require.Error(t, err, "exit 1 unless every device updated")
	require.Contains(t, stderr, "devices that did not update")
	require.Regexp(t, stack.Device(2)+`\s+FAILED\s+\S`, stderr, "the failed device with its reason")
	out, _, err = run("rollout", "status", "cli-2")
	require.NoError(t, err)
	require.Contains(t, out, stack.Device(2))
	s.SetDeviceFaults(nil, nil)

	// A rollout schedule: created, listed with its next runs, deleted.
	_, stderr, err = run(append([]string{"schedule", "create", "nightly", "--cron", "0 3 * * *", "--paused"}, update...)...)
	require.NoError(t, err, stderr)
	require.Eventually(t, func() bool {
		out, _, err := run("schedule", "list", "-o", "json")
		return err == nil && strings.Contains(out, `"scheduleId":"nightly"`)
	}, 30*time.Second, 500*time.Millisecond)
	// A scheduled run is steered by the ID `rollout list` prints.
	require.NoError(t, s.Client.ScheduleClient().GetHandle(ctx, "nightly").Trigger(ctx, client.ScheduleTriggerOptions{}))
	var scheduled string
	require.Eventually(t, func() bool {
		out, _, err := run("rollout", "list", "-o", "json")
		var rows []struct{ RolloutID string }
		if err != nil || json.Unmarshal([]byte(out), &rows) != nil {
			return false
		}
		for _, r := range rows {
			if strings.HasPrefix(r.RolloutID, "nightly-") {
				scheduled = r.RolloutID
				return true
			}
		}
		return false
	}, 30*time.Second, 500*time.Millisecond, "the scheduled run is listed")
	out, stderr, err = run("rollout", "status", scheduled, "-o", "json")
	require.NoError(t, err, "status of scheduled run %s: %s", scheduled, stderr)
	require.Contains(t, out, `"rolloutId": "`+scheduled+`"`)
	// Targets that do not resolve are refused when the schedule is created, not every night.
	missing := slices.Clone(update)
	missing[slices.Index(missing, string(targets))] = `["no-such-device"]`
	_, stderr, err = run(append([]string{"schedule", "create", "broken", "--cron", "0 3 * * *"}, missing...)...)
	require.Error(t, err)
	require.Contains(t, stderr, "no-such-device")
	out, stderr, err = run("schedule", "delete", "nightly")
	require.NoError(t, err, stderr)
	require.Contains(t, out, "schedule nightly deleted")

	// A deployment to a thing group: created, revised, its status read.
	_, err = s.IoT.CreateThingGroup(ctx, &iot.CreateThingGroupInput{ThingGroupName: aws.String("fleet")})
	require.NoError(t, err)
	_, err = s.IoT.AddThingToThingGroup(ctx, &iot.AddThingToThingGroupInput{ThingGroupName: aws.String("fleet"), ThingName: aws.String(stack.Device(1))})
	require.NoError(t, err)
	catalog := filepath.Join(dataDir, "components.json")
	_, stderr, err = run("deployment", "create", "fleet-sm", "--catalog", catalog, "--thing-group", "fleet", "--component", "aws.greengrass.Nucleus=9.9.9")
	require.Error(t, err, "a version the catalog lacks is refused before anything starts")
	require.Contains(t, stderr, "9.9.9")
	_, stderr, err = run("deployment", "create", "nowhere-sm", "--catalog", catalog, "--thing-group", "no-such-group", "--component", streamManager)
	require.Error(t, err, "a deployment to a missing group is refused")
	require.Contains(t, stderr, "thing group no-such-group does not exist")
	// The stack's --data-dir names the catalog it reads: one home for it.
	_, stderr, err = run("deployment", "create", "fleet-sm", "--data-dir", dataDir, "--thing-group", "fleet", "--component", streamManager)
	require.NoError(t, err, stderr)
	out, stderr, err = run("deployment", "revise", "fleet-sm", "--catalog", catalog, "--component", streamManager, "--component", "aws.greengrass.Nucleus=2.1.0")
	require.NoError(t, err, stderr)
	require.Contains(t, out, "revision 2")
	require.Eventually(t, func() bool {
		out, _, err := run("deployment", "status", "fleet-sm", "--catalog", catalog, "-o", "json")
		var st struct {
			Revision, Members int
		}
		return err == nil && json.Unmarshal([]byte(out), &st) == nil && st.Revision == 2 && st.Members == 1
	}, 30*time.Second, 500*time.Millisecond)

	// Rolling cli-2 back after later rollouts of its devices (the schedule's run) is refused
	// before anything starts, naming them; --anyway starts it with a note.
	_, stderr, err = run("rollout", "rollback", "cli-2")
	require.Error(t, err)
	require.Contains(t, stderr, "rollout cli-2 is not rolled back, because ")
	require.Contains(t, stderr, "Roll the latest of them back first")
	_, stderr, err = run("rollout", "rollback", "cli-2", "--anyway")
	require.NoError(t, err, stderr)
	require.Contains(t, stderr, "note: rollouts started since cli-2 ended (")
}
