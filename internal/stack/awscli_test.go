package stack_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/cliconfig"
)

// awsCLI runs Debian's AWS CLI (never a pyenv shim) against the local jobs service.
func awsCLI(t *testing.T, endpoint string, args ...string) ([]byte, []byte, error) {
	t.Helper()
	return awsCLIAs(t, endpoint, cliconfig.DefaultAccessKeyID, cliconfig.DefaultSecretKey, args...)
}

// awsCLIAs is awsCLI signing with another access key.
func awsCLIAs(t *testing.T, endpoint, keyID, secret string, args ...string) ([]byte, []byte, error) {
	t.Helper()
	if _, err := os.Stat("/usr/bin/aws"); err != nil {
		t.Fatalf("the AWS CLI is not installed at /usr/bin/aws: run `make deps` (apt-get install awscli)")
	}
	cmd := exec.Command("/usr/bin/aws", append([]string{"--endpoint-url", endpoint, "--output", "json"}, args...)...)
	home := t.TempDir()
	cmd.Env = []string{
		"HOME=" + home, "PATH=/usr/bin:/bin",
		"AWS_ACCESS_KEY_ID=" + keyID, "AWS_SECRET_ACCESS_KEY=" + secret,
		"AWS_DEFAULT_REGION=us-east-1", "AWS_PAGER=", "AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=" + home + "/config", "AWS_SHARED_CREDENTIALS_FILE=" + home + "/credentials",
	}
	var stdout, stderr stdBuf
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.b, stderr.b, err
}

// iotCLI is `aws iot ARGS...` against endpoint, failing the test when it fails.
func iotCLI(t *testing.T, endpoint string) func(args ...string) string {
	return func(args ...string) string {
		t.Helper()
		out, stderr, err := awsCLI(t, endpoint, append([]string{"iot"}, args...)...)
		require.NoError(t, err, "aws iot %v: %s", args, stderr)
		return string(out)
	}
}

type stdBuf struct{ b []byte }

func (s *stdBuf) Write(p []byte) (int, error) { s.b = append(s.b, p...); return len(p), nil }

// TestSeedCommandsThroughAWSCLI runs the seed's create-software-update-job and describe-job
// with the real AWS CLI.
func TestSeedCommandsThroughAWSCLI(t *testing.T) {
	ctx := context.Background()
	s := startStack(t)
	_, err := s.StartDevices(ctx, 1, "1.10.2", 0)
	require.NoError(t, err)

	seed := []string{"greengrass", "create-software-update-job",
		"--update-targets-architecture", "x86_64",
		"--update-targets", `["arn:aws:iot:us-east-1:123456789012:thing/device-0001"]`,
		"--update-targets-operating-system", "ubuntu",
		"--software-to-update", "core",
		"--s3-url-signer-role", "arn:aws:iam::123456789012:role/myS3UrlSignerRole",
		"--update-agent-log-level", "WARN",
		"--amzn-client-token", "myClientToken1"}
	// Nothing published: refused before anything starts, saying what to publish (devices
	// refuse an update with nothing to download), and the token stays unused.
	_, stderr, err := awsCLI(t, s.JobsURL, seed...)
	require.Error(t, err)
	require.Contains(t, string(stderr), "BadRequestException")
	require.Contains(t, string(stderr), "has no published release of core (none at all): publish one (`starter release publish --software core --os ubuntu --architecture x86_64")
	_, err = s.PublishRelease(ctx, "core", "1.11.6")
	require.NoError(t, err)

	out, stderr, err := awsCLI(t, s.JobsURL, seed...)
	require.NoError(t, err, string(stderr))
	var created struct{ IotJobId, IotJobArn, PlatformSoftwareVersion string }
	require.NoError(t, json.Unmarshal(out, &created), string(out))
	require.NotEmpty(t, created.IotJobId)
	require.Equal(t, "arn:aws:iot:us-east-1:000000000000:job/"+created.IotJobId, created.IotJobArn)
	require.Equal(t, "1.11.6", created.PlatformSoftwareVersion)

	var job struct {
		Job struct {
			JobID             string `json:"jobId"`
			Status            string `json:"status"`
			TargetSelection   string `json:"targetSelection"`
			JobProcessDetails struct {
				Succeeded int `json:"numberOfSucceededThings"`
				Queued    int `json:"numberOfQueuedThings"`
			} `json:"jobProcessDetails"`
		} `json:"job"`
	}
	require.Eventually(t, func() bool {
		out, stderr, err := awsCLI(t, s.JobsURL, "iot", "describe-job", "--job-id", created.IotJobId)
		require.NoError(t, err, string(stderr))
		require.NoError(t, json.Unmarshal(out, &job))
		return job.Job.Status == "COMPLETED"
	}, 60*time.Second, 500*time.Millisecond)
	require.Equal(t, created.IotJobId, job.Job.JobID)
	require.Equal(t, "SNAPSHOT", job.Job.TargetSelection)
	require.Equal(t, 1, job.Job.JobProcessDetails.Succeeded)

	// The same token returns the same job; a different request with it is refused.
	out, stderr, err = awsCLI(t, s.JobsURL, seed...)
	require.NoError(t, err, string(stderr))
	var again struct{ IotJobId string }
	require.NoError(t, json.Unmarshal(out, &again))
	require.Equal(t, created.IotJobId, again.IotJobId)
	changed := append([]string{}, seed...)
	changed[len(changed)-3] = "ERROR"
	_, stderr, err = awsCLI(t, s.JobsURL, changed...)
	require.Error(t, err)
	require.Contains(t, string(stderr), "already used for a different request")

	// An unsupported combination fails with a message that says what is allowed.
	_, stderr, err = awsCLI(t, s.JobsURL, "greengrass", "create-software-update-job",
		"--update-targets-architecture", "x86_64", "--update-targets", `["arn:aws:iot:us-east-1:123456789012:thing/device-0001"]`,
		"--update-targets-operating-system", "raspbian", "--software-to-update", "core",
		"--s3-url-signer-role", "arn:aws:iam::123456789012:role/myS3UrlSignerRole")
	require.Error(t, err)
	require.Contains(t, string(stderr), "BadRequestException")
	require.Contains(t, string(stderr), "raspbian/x86_64 is not a supported combination")

	// An unregistered core is refused and creates no job.
	_, stderr, err = awsCLI(t, s.JobsURL, "greengrass", "create-software-update-job",
		"--update-targets-architecture", "x86_64", "--update-targets", `["arn:aws:iot:us-east-1:123456789012:thing/ghost"]`,
		"--update-targets-operating-system", "ubuntu", "--software-to-update", "core",
		"--s3-url-signer-role", "arn:aws:iam::123456789012:role/myS3UrlSignerRole", "--amzn-client-token", "ghost-token")
	require.Error(t, err)
	require.Contains(t, string(stderr), "ghost")
	jobs, _, err := s.Jobs.ListJobs("", "", "", 0, "")
	require.NoError(t, err)
	require.Len(t, jobs, 1, "only the valid update created a job")
}

// TestInventoryShadowThroughAWSCLI reads the agent's inventory shadow, and writes a shadow,
// with the AWS CLI's iot-data commands: the Device Shadow service's REST API as AWS serves it.
func TestInventoryShadowThroughAWSCLI(t *testing.T) {
	ctx := context.Background()
	s := startStack(t)
	_, err := s.StartDevices(ctx, 1, "1.10.2", 0)
	require.NoError(t, err)
	out := t.TempDir() + "/shadow.json"
	var doc struct {
		State struct {
			Reported struct {
				Software  map[string]string
				Connected bool
			}
		}
		Version int
	}
	require.Eventually(t, func() bool {
		_, _, err := awsCLI(t, s.JobsURL, "iot-data", "get-thing-shadow", "--thing-name", "device-0001", "--shadow-name", "otaflow", out)
		if err != nil {
			return false
		}
		raw, _ := os.ReadFile(out)
		return json.Unmarshal(raw, &doc) == nil && doc.State.Reported.Software["core"] == "1.10.2"
	}, 30*time.Second, 200*time.Millisecond, "the agent's inventory shadow")
	require.True(t, doc.State.Reported.Connected)

	_, stderr, err := awsCLI(t, s.JobsURL, "iot-data", "update-thing-shadow", "--thing-name", "device-0001", "--shadow-name", "ops",
		"--cli-binary-format", "raw-in-base64-out", "--payload", `{"state":{"desired":{"led":"on"}}}`, out)
	require.NoError(t, err, string(stderr))
	raw, _ := os.ReadFile(out)
	require.Contains(t, string(raw), `"led":"on"`)
	_, stderr, err = awsCLI(t, s.JobsURL, "iot-data", "get-thing-shadow", "--thing-name", "device-0001", "--shadow-name", "missing", out)
	require.Error(t, err)
	require.Contains(t, string(stderr), "ResourceNotFoundException")

	// The classic shadow, the list of named ones, and delete.
	_, stderr, err = awsCLI(t, s.JobsURL, "iot-data", "update-thing-shadow", "--thing-name", "device-0001",
		"--cli-binary-format", "raw-in-base64-out", "--payload", `{"state":{"desired":{"mode":"eco"}}}`, out)
	require.NoError(t, err, string(stderr))
	_, stderr, err = awsCLI(t, s.JobsURL, "iot-data", "get-thing-shadow", "--thing-name", "device-0001", out)
	require.NoError(t, err, string(stderr))
	raw, _ = os.ReadFile(out)
	require.Contains(t, string(raw), `"mode":"eco"`)
	listed, stderr, err := awsCLI(t, s.JobsURL, "iot-data", "list-named-shadows-for-thing", "--thing-name", "device-0001")
	require.NoError(t, err, string(stderr))
	var names struct{ Results []string }
	require.NoError(t, json.Unmarshal(listed, &names))
	require.Subset(t, names.Results, []string{"ops", "otaflow"})
	require.NotContains(t, names.Results, "", "the classic shadow is not a named one")
	_, stderr, err = awsCLI(t, s.JobsURL, "iot-data", "delete-thing-shadow", "--thing-name", "device-0001", "--shadow-name", "ops", out)
	require.NoError(t, err, string(stderr))
	raw, _ = os.ReadFile(out)
	require.Contains(t, string(raw), `"version":1`)
	_, stderr, err = awsCLI(t, s.JobsURL, "iot-data", "get-thing-shadow", "--thing-name", "device-0001", "--shadow-name", "ops", out)
	require.Error(t, err)
	require.Contains(t, string(stderr), "ResourceNotFoundException")
}

// TestControlPlaneThroughAWSCLI: the operations OTA scripts call, through the real AWS CLI.
func TestControlPlaneThroughAWSCLI(t *testing.T) {
	s := startStack(t)
	run := iotCLI(t, s.JobsURL)
	run("create-thing", "--thing-name", "cli-dev", "--attribute-payload", `{"attributes":{"model":"m1"}}`)
	run("update-thing", "--thing-name", "cli-dev", "--attribute-payload", `{"attributes":{"site":"berlin"},"merge":true}`)
	require.Contains(t, run("describe-thing", "--thing-name", "cli-dev"), `"site": "berlin"`)
	require.Contains(t, run("list-things", "--attribute-name", "site", "--attribute-value", "berlin"), "cli-dev")
	require.NotContains(t, run("list-things", "--thing-type-name", "gateway"), "cli-dev", "a type filter never matches everything")
	run("create-thing-group", "--thing-group-name", "cli-fleet")
	run("update-thing-groups-for-thing", "--thing-name", "cli-dev", "--thing-groups-to-add", "cli-fleet")
	require.Contains(t, run("list-thing-groups-for-thing", "--thing-name", "cli-dev"), "cli-fleet")
	require.Contains(t, run("list-thing-groups"), "cli-fleet")
	run("create-job", "--job-id", "cli-job", "--targets", "arn:aws:iot:us-east-1:000000000000:thing/cli-dev", "--document", `{"operation":"x"}`)
	require.Contains(t, run("get-job-document", "--job-id", "cli-job"), `{\"operation\":\"x\"}`)
	run("update-job", "--job-id", "cli-job", "--description", "from the CLI")
	require.Contains(t, run("describe-job", "--job-id", "cli-job"), "from the CLI")
	// A job for later, with an abort threshold: SCHEDULED until its start, and cancelable.
	start := time.Now().UTC().Add(2 * time.Hour)
	run("create-job", "--job-id", "cli-later", "--targets", "arn:aws:iot:us-east-1:000000000000:thinggroup/cli-fleet",
		"--document", `{"operation":"x"}`,
		"--scheduling-config", fmt.Sprintf("startTime=%s,endTime=%s,endBehavior=CANCEL",
			start.Format("2006-01-02T15:04"), start.Add(time.Hour).Format("2006-01-02T15:04")),
		"--abort-config", `{"criteriaList":[{"failureType":"FAILED","action":"CANCEL","thresholdPercentage":20,"minNumberOfExecutedThings":10}]}`)
	later := run("describe-job", "--job-id", "cli-later")
	require.Contains(t, later, `"status": "SCHEDULED"`)
	require.Contains(t, later, `"endBehavior": "CANCEL"`)
	require.Contains(t, later, `"thresholdPercentage": 20`)
	require.Contains(t, run("list-jobs", "--status", "SCHEDULED"), "cli-later")
	run("cancel-job", "--job-id", "cli-later")
	require.Contains(t, run("describe-job", "--job-id", "cli-later"), `"status": "CANCELED"`)
	require.Contains(t, run("describe-endpoint", "--endpoint-type", "iot:Data-ATS"), "endpointAddress")
	_, stderr, err := awsCLI(t, s.JobsURL, "iot", "list-policies")
	require.Error(t, err, "an operation not served")
	require.Contains(t, string(stderr), "UnknownOperationException")
	_, stderr, err = awsCLI(t, s.JobsURL, "iot", "list-jobs", "--status", "RUNNING")
	require.Error(t, err)
	require.Contains(t, string(stderr), "InvalidRequestException")
}

// TestJobsDeviceAPIOverHTTPS: the iot-jobs-data plane (a device that polls over HTTPS instead
// of MQTT) through the AWS CLI: pending, start next, update, describe.
func TestJobsDeviceAPIOverHTTPS(t *testing.T) {
	ctx := context.Background()
	s := startStack(t)
	_, err := s.IoT.CreateThing(ctx, &iot.CreateThingInput{ThingName: aws.String("poller")})
	require.NoError(t, err)
	_, err = s.IoT.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("https-job"), Targets: []string{"arn:aws:iot:us-east-1:000000000000:thing/poller"},
		Document: aws.String(`{"operation":"noop"}`)})
	require.NoError(t, err)
	run := func(args ...string) map[string]any {
		t.Helper()
		out, stderr, err := awsCLI(t, s.JobsURL, append([]string{"iot-jobs-data"}, args...)...)
		require.NoError(t, err, "aws iot-jobs-data %v: %s", args, stderr)
		var v map[string]any
		if len(out) > 0 {
			require.NoError(t, json.Unmarshal(out, &v), string(out))
		}
		return v
	}
	pending := run("get-pending-job-executions", "--thing-name", "poller")
	require.Len(t, pending["queuedJobs"], 1)
	exec := run("start-next-pending-job-execution", "--thing-name", "poller", "--status-details", "step=download")["execution"].(map[string]any)
	require.Equal(t, "https-job", exec["jobId"])
	require.Equal(t, "IN_PROGRESS", exec["status"])
	require.Equal(t, `{"operation":"noop"}`, exec["jobDocument"], "the document, as a string on this plane")
	upd := run("update-job-execution", "--thing-name", "poller", "--job-id", "https-job", "--status", "SUCCEEDED",
		"--expected-version", fmt.Sprint(exec["versionNumber"]), "--include-job-execution-state")
	require.Equal(t, "SUCCEEDED", upd["executionState"].(map[string]any)["status"])
	// A device may not describe an execution that has ended (AWS: TerminalStateException).
	_, stderr, err := awsCLI(t, s.JobsURL, "iot-jobs-data", "describe-job-execution", "--thing-name", "poller", "--job-id", "https-job")
	require.Error(t, err)
	require.Contains(t, string(stderr), "TerminalStateException")
	// The control plane on the same paths is still the control plane.
	list, err := s.IoT.ListJobExecutionsForThing(ctx, &iot.ListJobExecutionsForThingInput{ThingName: aws.String("poller")})
	require.NoError(t, err)
	require.Len(t, list.ExecutionSummaries, 1)
}

// TestFleetIndexThroughAWSCLI: `aws iot update-indexing-configuration`, `search-index` and
// `get-statistics` work against the local service unchanged (AWS's own query syntax).
func TestFleetIndexThroughAWSCLI(t *testing.T) {
	s := startStack(t)
	run := iotCLI(t, s.JobsURL)
	for i, site := range []string{"berlin", "berlin", "paris"} {
		name := fmt.Sprintf("idx-%d", i)
		run("create-thing", "--thing-name", name, "--attribute-payload", fmt.Sprintf(`{"attributes":{"site":%q,"load":"%d"}}`, site, 10*(i+1)))
	}
	require.Contains(t, run("get-indexing-configuration"), "shadow.name.health.reported.healthCheckFailures", "the local stack indexes the health record")
	run("update-indexing-configuration", "--thing-indexing-configuration",
		`{"thingIndexingMode":"REGISTRY","customFields":[{"name":"attributes.load","type":"Number"}]}`)
	require.Contains(t, run("describe-index", "--index-name", "AWS_Things"), `"indexStatus": "ACTIVE"`)
	var found struct{ Things []struct{ ThingName string } }
	require.NoError(t, json.Unmarshal([]byte(run("search-index", "--query-string", "attributes.site:berlin AND attributes.load>10")), &found))
	require.Len(t, found.Things, 1)
	require.Equal(t, "idx-1", found.Things[0].ThingName)
	var stats struct {
		Statistics struct {
			Count            int
			Average, Maximum float64
		}
	}
	require.NoError(t, json.Unmarshal([]byte(run("get-statistics", "--query-string", "thingName:idx-*", "--aggregation-field", "attributes.load")), &stats))
	require.Equal(t, 3, stats.Statistics.Count)
	require.InDelta(t, 20, stats.Statistics.Average, 1e-9)
	require.InDelta(t, 30, stats.Statistics.Maximum, 1e-9)
	_, stderr, err := awsCLI(t, s.JobsURL, "iot", "search-index", "--query-string", "thingName:(idx")
	require.Error(t, err)
	require.Contains(t, string(stderr), "InvalidQueryException")
}
