package stack_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	historypb "go.temporal.io/api/history/v1"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/internal/stack"
	"github.com/otaflow/otaflow/workflows/contract"
)

// TestRecordHistories records real rollout histories into workflows/testdata, which the
// replay tests there run against the current workflow code. Run it after a deliberate change
// to the workflow (behind workflow.GetVersion): OTAFLOW_RECORD_HISTORIES=1 go test -run TestRecordHistories ./internal/stack
func TestRecordHistories(t *testing.T) {
	if os.Getenv("OTAFLOW_RECORD_HISTORIES") == "" {
		t.Skip("set OTAFLOW_RECORD_HISTORIES=1 to re-record workflows/testdata")
	}
	ctx := context.Background()
	s, err := stack.Start(ctx, stack.Options{DataDir: t.TempDir(), InMemoryTemporal: true, UIPort: -1, Logger: testLogger()})
	require.NoError(t, err)
	defer s.Close()
	arns, err := s.StartDevices(ctx, 6, "1.10.2", 10*time.Millisecond)
	require.NoError(t, err)

	ok := request("history-waves", arns)
	ok.Waves = "1,50%,100%"
	aborted := request("history-abort-rollback", arns)
	setVersion(&aborted, "1.11.7")
	aborted.Waves = "2,100%"
	aborted.OnFailure = contract.OnFailureRollback
	for _, r := range []struct {
		name string
		req  contract.RolloutRequest
		fail []string
	}{{"waves-succeeded.json", ok, nil}, {"abort-rollback.json", aborted, []string{stack.Device(3), stack.Device(4), stack.Device(5)}}} {
		name, req := r.name, r.req
		s.SetDeviceFaults(r.fail, nil)
		run, err := rolloutclient.Start(ctx, s.Client, contract.TaskQueue, req)
		require.NoError(t, err)
		rolloutclient.Result(ctx, run)
		var h historypb.History
		it := s.Client.GetWorkflowHistory(ctx, run.GetID(), run.GetRunID(), false, 0)
		for it.HasNext() {
			e, err := it.Next()
			require.NoError(t, err)
			h.Events = append(h.Events, e)
		}
		raw, err := protojson.MarshalOptions{Indent: "  "}.Marshal(&h)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join("..", "..", "workflows", "testdata", name), raw, 0o644))
	}
}
