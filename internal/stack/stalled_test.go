package stack_test

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/cliconfig"
	"github.com/otaflow/otaflow/internal/iotclient"
	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/internal/rolloutops"
	"github.com/otaflow/otaflow/internal/rolloutworker"
	"github.com/otaflow/otaflow/internal/stack"
	"github.com/otaflow/otaflow/workflows/contract"
)

// TestStalledRolloutIsExplained: a rollout that does not get going says why. With no worker
// it says that no worker polls the task queue; with a worker whose IoT endpoint is down it
// shows the activity's last failure instead, and does not blame the worker.
func TestStalledRolloutIsExplained(t *testing.T) {
	ctx := context.Background()
	s, err := stack.Start(ctx, stack.Options{DataDir: t.TempDir(), InMemoryTemporal: true, UIPort: -1, NoWorker: true, Logger: testLogger()})
	require.NoError(t, err)
	defer s.Close()
	arns, err := s.StartDevices(ctx, 1, "1.10.2", 0)
	require.NoError(t, err)

	_, err = rolloutclient.Start(ctx, s.Client, contract.TaskQueue, request("stalled-no-worker", arns))
	require.NoError(t, err)
	_, err = rolloutclient.WaitForJob(ctx, s.Client, "stalled-no-worker", contract.TaskQueue, 2*time.Second)
	require.ErrorContains(t, err, "no worker polls task queue "+contract.TaskQueue)

	iotc, err := iotclient.NewIoT(ctx, iotclient.Config{Endpoint: "http://127.0.0.1:1", Region: cliconfig.DefaultRegion,
		AccessKeyID: cliconfig.DefaultAccessKeyID, SecretAccessKey: cliconfig.DefaultSecretKey})
	require.NoError(t, err)
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		rolloutworker.Run(wctx, s.Client, s.Temporal.Namespace(), contract.TaskQueue, &rolloutops.Ops{IoT: iotc}, zerolog.Nop())
	}()
	defer func() { stop(); <-done }()
	_, err = rolloutclient.Start(ctx, s.Client, contract.TaskQueue, request("stalled-failing", arns))
	require.NoError(t, err)
	_, err = rolloutclient.WaitForJob(ctx, s.Client, "stalled-failing", contract.TaskQueue, 8*time.Second)
	require.ErrorContains(t, err, "activity FreezeTargets keeps failing")
	require.ErrorContains(t, err, "connection refused")
	require.NotContains(t, err.Error(), "no worker polls")
}
