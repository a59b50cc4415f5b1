package stack_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/internal/stack"
	"github.com/otaflow/otaflow/workflows/contract"
)

// BenchmarkRollout measures whole rollouts on the local stack with zero-time installs:
// devices updated per minute, and the rollout's workflow history length (which must not
// grow with the fleet).
func BenchmarkRollout(b *testing.B) {
	// `starter bench` measures larger fleets, with devices in their own processes.
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("devices=%d", n), func(b *testing.B) {
			ctx := context.Background()
			s, err := stack.Start(ctx, stack.Options{DataDir: b.TempDir(), InMemoryTemporal: true, UIPort: -1, Logger: testLogger()})
			require.NoError(b, err)
			defer s.Close()
			arns, err := s.StartDevices(ctx, n, "1.0.0", 0)
			require.NoError(b, err)
			var events int
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				req := request(fmt.Sprintf("bench-%d-%d", n, i), arns)
				req.Version = fmt.Sprintf("2.0.%d", i)
				req.PollInterval = 100 * time.Millisecond
				req.Timeout = 15 * time.Minute
				run, err := rolloutclient.Start(ctx, s.Client, contract.TaskQueue, req)
				require.NoError(b, err)
				res, err := rolloutclient.Result(ctx, run)
				require.NoError(b, err)
				require.Equal(b, n, res.Counts.Succeeded)
				iter := s.Client.GetWorkflowHistory(ctx, run.GetID(), run.GetRunID(), false, 0)
				events = 0
				for iter.HasNext() {
					if _, err := iter.Next(); err != nil {
						b.Fatal(err)
					}
					events++
				}
			}
			elapsed := time.Since(start)
			b.ReportMetric(float64(n*b.N)/elapsed.Minutes(), "devices/min")
			b.ReportMetric(float64(events), "history-events")
		})
	}
}
