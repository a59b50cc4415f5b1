package iotjobs

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseRequestTopic(t *testing.T) {
	for _, c := range []struct {
		topic string
		ok    bool
		want  Request
	}{
		{"$aws/things/dev-1/jobs/get", true, Request{Thing: "dev-1", Op: OpGetPending}},
		{"$aws/things/dev-1/jobs/start-next", true, Request{Thing: "dev-1", Op: OpStartNext}},
		{"$aws/things/dev-1/jobs/j1/get", true, Request{Thing: "dev-1", Op: OpDescribe, JobID: "j1"}},
		{"$aws/things/dev-1/jobs/$next/get", true, Request{Thing: "dev-1", Op: OpDescribe, JobID: NextJobID}},
		{"$aws/things/dev-1/jobs/j1/update", true, Request{Thing: "dev-1", Op: OpUpdate, JobID: "j1"}},
		{"$aws/things/dev-1/jobs/j1/delete", true, Request{Thing: "dev-1", Op: OpUnknown}},
		{"$aws/things/dev-1/jobs/a/b/update", true, Request{Thing: "dev-1", Op: OpUnknown}},
		{"$aws/things/dev-1/jobs//update", true, Request{Thing: "dev-1", Op: OpUnknown}},
		// A thing name cannot hold a slash.
		{"$aws/things/victim/jobs/x/jobs/get", true, Request{Thing: "victim", Op: OpUnknown}},
		{"$aws/things/a/b/jobs/get", false, Request{}},
		{"$aws/things//jobs/get", false, Request{}},
		{"$aws/things/dev-1/shadow/get", false, Request{}},
		{"other/topic", false, Request{}},
	} {
		got, ok := ParseRequestTopic(c.topic)
		require.Equal(t, c.ok, ok, c.topic)
		require.Equal(t, c.want, got, c.topic)
	}
}

func TestTopicsAndReplies(t *testing.T) {
	topic := Topic("dev-1", UpdateSuffix("j1"))
	require.Equal(t, "$aws/things/dev-1/jobs/j1/update", topic)
	req, accepted, ok := ReplyTopic(Accepted(topic))
	require.True(t, ok && accepted)
	require.Equal(t, topic, req)
	req, accepted, ok = ReplyTopic(Rejected(Topic("dev-1", DescribeSuffix("j1"))))
	require.True(t, ok && !accepted)
	require.Equal(t, "$aws/things/dev-1/jobs/j1/get", req)
	_, _, ok = ReplyTopic(topic)
	require.False(t, ok)
}

// TestWireNames pins the JSON member names to AWS's (developer guide, "Jobs device MQTT API").
func TestWireNames(t *testing.T) {
	raw, err := json.Marshal(&UpdateRequest{Status: StatusSucceeded, StatusDetails: map[string]string{"k": "v"}, ExpectedVersion: 3,
		IncludeJobExecutionState: true, StepTimeoutInMinutes: 5, Token: Token{ClientToken: "t"}})
	require.NoError(t, err)
	require.JSONEq(t, `{"status":"SUCCEEDED","statusDetails":{"k":"v"},"expectedVersion":3,"includeJobExecutionState":true,
		"stepTimeoutInMinutes":5,"clientToken":"t"}`, string(raw))
	raw, err = json.Marshal(&ErrorReply{Code: CodeVersionMismatch, Message: "m", Timestamp: 1,
		ExecutionState: &ExecutionState{Status: StatusInProgress, VersionNumber: 2}})
	require.NoError(t, err)
	require.JSONEq(t, `{"code":"VersionMismatch","message":"m","timestamp":1,"executionState":{"status":"IN_PROGRESS","versionNumber":2}}`, string(raw),
		"no clientToken member when the request had none")
	var p GetPendingReply
	require.NoError(t, json.Unmarshal([]byte(`{"inProgressJobs":[{"jobId":"a","queuedAt":1,"lastUpdatedAt":2,"versionNumber":3,"executionNumber":1}],
		"queuedJobs":[],"timestamp":5,"clientToken":"c"}`), &p))
	require.Equal(t, "a", p.InProgressJobs[0].JobID)
	require.Equal(t, "c", p.ClientToken)
	require.True(t, StatusRejected.Terminal())
	require.False(t, StatusQueued.Terminal())
}

// BenchmarkParseRequestTopic is what the embedded broker adds to each device publish to tell
// a topic that is no Jobs API (answered InvalidTopic).
func BenchmarkParseRequestTopic(b *testing.B) {
	topics := []string{"$aws/things/dev-1/jobs/j1/update", "$aws/things/dev-1/jobs/start-next",
		"$aws/things/dev-1/jobs/j1/frobnicate", "$aws/things/dev-1/shadow/name/otaflow/update"}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		ParseRequestTopic(topics[i%len(topics)])
	}
}
