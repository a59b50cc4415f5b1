package stack_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/internal/stack"
	"github.com/otaflow/otaflow/workflows/contract"
)

// TestTwoStacksAtOnce starts two whole stacks on one machine at the same time, each with a
// persisted Temporal database (the configuration `starter dev` uses), and runs a rollout on
// each: no port of one may be taken by the other, however their starts interleave.
func TestTwoStacksAtOnce(t *testing.T) {
	ctx := context.Background()
	stacks := make([]*stack.Stack, 2)
	errs := make(chan error, 2)
	for i := range stacks {
		go func() {
			s, err := stack.Start(ctx, stack.Options{DataDir: t.TempDir(), UIPort: 0, Logger: testLogger()})
			stacks[i] = s
			errs <- err
		}()
	}
	for range stacks {
		require.NoError(t, <-errs)
	}
	for _, s := range stacks {
		t.Cleanup(s.Close)
	}
	require.NotEqual(t, stacks[0].Temporal.FrontendAddr(), stacks[1].Temporal.FrontendAddr())
	for i, s := range stacks {
		arns, err := s.StartDevices(ctx, 3, "1.10.2", 0)
		require.NoError(t, err)
		run, err := rolloutclient.Start(ctx, s.Client, contract.TaskQueue, request(fmt.Sprintf("two-stacks-%d", i), arns))
		require.NoError(t, err)
		res, err := rolloutclient.Result(ctx, run)
		require.NoError(t, err)
		require.Equal(t, contract.StateSucceeded, res.State, res.Message)
		require.Equal(t, contract.Counts{Succeeded: 3}, res.Counts)
	}
}

// TestDemoWithDefaultPortsTaken runs `starter demo` while something else holds every one of
// its default ports (as a machine with mosquitto and a Temporal dev server does): the demo
// moves to free ports, says so and which it used, and succeeds. `starter dev`, which keeps
// its documented ports, refuses and names the flag to change.
func TestDemoWithDefaultPortsTaken(t *testing.T) {
	bin := starterCLI(t)
	for _, addr := range []string{"127.0.0.1:7233", "127.0.0.1:8233", "127.0.0.1:1883", "127.0.0.1:4566"} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue // already taken by something else: just as good
		}
		t.Cleanup(func() { l.Close() })
	}
	run := func(timeout time.Duration, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	out, err := run(3*time.Minute, "demo", "--devices", "3")
	require.NoError(t, err, out)
	for _, flag := range []string{"--temporal-port", "--ui-port", "--mqtt-addr", "--jobs-addr"} {
		require.Contains(t, out, flag+" picks a free", "the demo says which default it moved")
	}
	require.Contains(t, out, "stack up: Temporal 127.0.0.1:")
	require.NotContains(t, out, "stack up: Temporal 127.0.0.1:7233,")
	require.Contains(t, out, "SUCCEEDED")

	out, err = run(time.Minute, "dev", "--data-dir", t.TempDir())
	require.Error(t, err, out)
	require.True(t, strings.Contains(out, "port 7233 on 127.0.0.1 is already in use") && strings.Contains(out, "--temporal-port"), out)
}
