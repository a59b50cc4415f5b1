package stack_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/jobs"
	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/internal/stack"
	"github.com/otaflow/otaflow/workflows"
)

// BenchmarkRollout measures whole rollouts on the local stack with zero-time installs:
// devices updated per minute, and the rollout's workflow history length (which must not
// grow with the fleet).
func BenchmarkRollout(b *testing.B) {
	sizes := []int{100, 1000}
	if os.Getenv("OTAFLOW_BENCH_10K") != "" {
		sizes = append(sizes, 10000)
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("devices=%d", n), func(b *testing.B) {
			ctx := context.Background()
			s, err := stack.Start(ctx, stack.Options{DataDir: b.TempDir(), InMemoryTemporal: true, UIPort: -1, Logger: testLogger()})
			require.NoError(b, err)
			defer s.Close()
			// Past a few thousand devices, one process cannot hold an MQTT connection per device
			// (this machine allows 20,000 open files, and each device needs two); then devices
			// are driven straight through the jobs service's device API instead.
			direct := n > 4000
			var arns []string
			if direct {
				for i := 1; i <= n; i++ {
					th, err := s.Jobs.CreateThing(stack.Device(i), nil)
					require.NoError(b, err)
					arns = append(arns, th.Arn)
				}
				stop := make(chan struct{})
				defer close(stop)
				for w := 0; w < 8; w++ {
					go driveDevices(s, n, w, 8, stop)
				}
			} else {
				arns, err = s.StartDevices(ctx, n, "1.0.0", 0)
				require.NoError(b, err)
			}
			var events int
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				req := request(fmt.Sprintf("bench-%d-%d", n, i), arns)
				req.Version = fmt.Sprintf("2.0.%d", i)
				req.PollInterval = 100 * time.Millisecond
				req.Timeout = 15 * time.Minute
				run, err := rolloutclient.Start(ctx, s.Client, workflows.TaskQueue, req)
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

// driveDevices plays devices w, w+k, ... through the jobs service: take the next job, report
// SUCCEEDED, as the agent does over MQTT.
func driveDevices(s *stack.Stack, n, w, k int, stop <-chan struct{}) {
	for {
		idle := true
		for i := w + 1; i <= n; i += k {
			select {
			case <-stop:
				return
			default:
			}
			e, _, err := s.Jobs.StartNext(stack.Device(i), nil, 0)
			if err != nil || e == nil {
				continue
			}
			idle = false
			s.Jobs.UpdateExecution(jobs.UpdateInput{Thing: stack.Device(i), JobID: e.JobID, Status: jobs.ExecSucceeded,
				StatusDetails: map[string]string{"previousVersion": "1.0.0"}})
		}
		if idle {
			time.Sleep(50 * time.Millisecond)
		}
	}
}
