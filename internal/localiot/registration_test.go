package localiot_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/localiot"
)

const bulkTemplate = `{
  "Parameters": {"ThingName": {"Type": "String"}, "Site": {"Type": "String", "Default": "lab"}},
  "Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {
    "ThingName": {"Ref": "ThingName"},
    "AttributePayload": {"site": {"Ref": "Site"}},
    "ThingGroups": ["fleet"]}}}
}`

// Bulk registration through aws-sdk-go-v2: a template and a JSON-lines input file in the
// artifact store register thousands of things with their attributes and groups, a batch to a
// transaction; lines that cannot be registered are counted and reported with their line
// numbers, and the rest go on; the reports are links to JSON lines.
func TestBulkRegistration(t *testing.T) {
	ctx := context.Background()
	svc := openService(t, t.TempDir())
	defer svc.Close()
	url := serve(t, svc)
	svc.SetBaseURL(url)
	c := iotClient(url, testCreds)
	_, err := svc.CreateThingGroup("fleet", "", localiot.GroupProperties{})
	require.NoError(t, err)
	_, err = svc.CreateThing("pi-00007", map[string]string{"site": "elsewhere"})
	require.NoError(t, err, "a thing that exists with other attributes: its line fails")

	var in strings.Builder
	const n = 2500
	for i := range n {
		fmt.Fprintf(&in, `{"ThingName": "pi-%05d", "Site": "site-%d"}`+"\n", i, i%3)
	}
	in.WriteString("not json\n")
	in.WriteString(`{"ThingName": "bad name!"}` + "\n")
	_, err = svc.PutArtifact("provisioning", "batch-1.jsonl", strings.NewReader(in.String()))
	require.NoError(t, err)
	for i := range 7 {
		_, err := svc.CreateThing(fmt.Sprintf("pi-%05d", i), map[string]string{"site": fmt.Sprintf("site-%d", i%3)})
		require.NoError(t, err, "things registered before are registered again without change")
	}

	start := func(key string) (*iot.StartThingRegistrationTaskOutput, error) {
		return c.StartThingRegistrationTask(ctx, &iot.StartThingRegistrationTaskInput{TemplateBody: aws.String(bulkTemplate),
			InputFileBucket: aws.String("provisioning"), InputFileKey: aws.String(key), RoleArn: aws.String("arn:aws:iam::000000000000:role/registration")})
	}
	_, err = start("missing.jsonl")
	require.ErrorContains(t, err, "does not exist: upload it first")
	started, err := start("batch-1.jsonl")
	require.NoError(t, err)
	var task *iot.DescribeThingRegistrationTaskOutput
	require.Eventually(t, func() bool {
		task, err = c.DescribeThingRegistrationTask(ctx, &iot.DescribeThingRegistrationTaskInput{TaskId: started.TaskId})
		require.NoError(t, err)
		return task.Status != types.StatusInProgress
	}, time.Minute, 20*time.Millisecond)
	require.Equal(t, types.StatusCompleted, task.Status, aws.ToString(task.Message))
	require.EqualValues(t, n-1, task.SuccessCount, "every good line but the conflicting thing")
	require.EqualValues(t, 3, task.FailureCount)
	require.EqualValues(t, 100, task.PercentageProgress)

	th, err := c.DescribeThing(ctx, &iot.DescribeThingInput{ThingName: aws.String("pi-02001")})
	require.NoError(t, err)
	require.Equal(t, "site-0", th.Attributes["site"])
	all, _, err := svc.ListThingsInThingGroup("fleet", false, 250, "")
	require.NoError(t, err)
	require.Len(t, all, 250, "a full page of the group's members")

	report := func(kind types.ReportType) []map[string]any {
		out, err := c.ListThingRegistrationTaskReports(ctx, &iot.ListThingRegistrationTaskReportsInput{TaskId: started.TaskId, ReportType: kind})
		require.NoError(t, err)
		require.Len(t, out.ResourceLinks, 1)
		resp, err := http.Get(out.ResourceLinks[0])
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		var lines []map[string]any
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			var l map[string]any
			require.NoError(t, json.Unmarshal(sc.Bytes(), &l))
			lines = append(lines, l)
		}
		return lines
	}
	errs := report(types.ReportTypeErrors)
	require.Len(t, errs, 3)
	require.Equal(t, "pi-00007", errs[0]["thingName"])
	require.Contains(t, errs[0]["errorMessage"], "already exists with different attributes")
	require.EqualValues(t, n+1, errs[1]["lineNumber"])
	require.Contains(t, errs[1]["errorMessage"], "not a JSON object")
	require.Contains(t, errs[2]["errorMessage"], `thing name "bad name!" is invalid`)
	require.Len(t, report(types.ReportTypeResults), n-1)

	list, err := c.ListThingRegistrationTasks(ctx, &iot.ListThingRegistrationTasksInput{Status: types.StatusCompleted})
	require.NoError(t, err)
	require.Equal(t, []string{aws.ToString(started.TaskId)}, list.TaskIds)
	_, err = c.StopThingRegistrationTask(ctx, &iot.StopThingRegistrationTaskInput{TaskId: started.TaskId})
	require.ErrorContains(t, err, "only a task in progress can be stopped")

	_, err = c.StartThingRegistrationTask(ctx, &iot.StartThingRegistrationTaskInput{TemplateBody: aws.String(`{"Resources": {"c": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificatePem": {"Ref": "Pem"}}}}}`),
		InputFileBucket: aws.String("provisioning"), InputFileKey: aws.String("batch-1.jsonl"), RoleArn: aws.String("arn:aws:iam::000000000000:role/registration")})
	require.ErrorContains(t, err, "makes none from a CSR or PEM")
}

// BenchmarkBulkRegistration registers 100,000 things (each in a group) from one input file
// per iteration, on bbolt: `go test -run '^$' -bench BulkRegistration -benchtime 1x ./internal/localiot/`.
func BenchmarkBulkRegistration(b *testing.B) {
	const n = 100000
	for range b.N {
		b.StopTimer()
		svc := openService(b, b.TempDir())
		b.StartTimer()
		registerFleet(b, svc, n)
		b.StopTimer()
		svc.Close()
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "things/s")
}

// BenchmarkCreateJobOnGroup creates a job on a thing group of 100,000 things, which queues
// an execution for each: `go test -run '^$' -bench CreateJobOnGroup -benchtime 1x ./internal/localiot/`
// (13.6 s with the dedupe that searched a list, 0.77 s with a set).
func BenchmarkCreateJobOnGroup(b *testing.B) {
	const n = 100000
	svc := openService(b, b.TempDir())
	defer svc.Close()
	registerFleet(b, svc, n)
	b.ResetTimer()
	for i := range b.N {
		job, err := svc.CreateJob(localiot.CreateJobInput{JobID: fmt.Sprintf("j%d", i), Document: `{"operation":"update"}`,
			Targets: []string{svc.ThingGroupArn("fleet")}})
		require.NoError(b, err)
		require.Equal(b, n, job.Counts.Queued)
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "executions/s")
}

// registerFleet registers n things in the group fleet with a bulk registration task.
func registerFleet(b *testing.B, svc *localiot.Service, n int) {
	var in strings.Builder
	for i := range n {
		fmt.Fprintf(&in, `{"ThingName": "dev-%07d", "Site": "s%d"}`+"\n", i, i%10)
	}
	_, err := svc.CreateThingGroup("fleet", "", localiot.GroupProperties{})
	require.NoError(b, err)
	_, err = svc.PutArtifact("provisioning", "fleet.jsonl", strings.NewReader(in.String()))
	require.NoError(b, err)
	id, err := svc.StartThingRegistrationTask(bulkTemplate, "provisioning", "fleet.jsonl", "arn:aws:iam::000000000000:role/r")
	require.NoError(b, err)
	for {
		task, err := svc.DescribeThingRegistrationTask(id)
		require.NoError(b, err)
		if task.Status != localiot.TaskInProgress {
			require.Equal(b, localiot.TaskCompleted, task.Status, task.Message)
			require.Equal(b, n, task.SuccessCount)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
