package localiot_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/localiot"
)

const crashChildEnv = "OTAFLOW_JOBS_CRASH_CHILD"

// TestCrashChild is the child half of TestSIGKILLLosesNoAcknowledgedWrite: it writes jobs
// and device updates as fast as it can, printing each one after the service acknowledged it.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashChildEnv)
	if dir == "" {
		t.Skip("run by TestSIGKILLLosesNoAcknowledgedWrite")
	}
	svc, err := localiot.Open(localiot.Options{Path: filepath.Join(dir, "jobs.db"), Logger: zerolog.Nop()})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	for i := 0; ; i++ {
		id := fmt.Sprintf("job-%05d", i)
		thing := fmt.Sprintf("t%05d", i)
		if _, err := svc.CreateThing(thing, nil); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		if _, err := svc.CreateJob(localiot.CreateJobInput{JobID: id, Targets: []string{thing}, Document: `{}`}); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println("created", id)
		if _, _, err := svc.StartNext(thing, nil, 0); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println("started", id)
	}
}

// TestSIGKILLLosesNoAcknowledgedWrite kills a process in the middle of writing and checks
// that everything it had acknowledged is there after a restart.
func TestSIGKILLLosesNoAcknowledgedWrite(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	acked := map[string]string{}
	sc := bufio.NewScanner(out)
	n := 0
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && (f[0] == "created" || f[0] == "started") {
			acked[f[1]] = f[0]
			n++
		}
		if f[0] == "error" {
			t.Fatalf("child: %s", sc.Text())
		}
		if n == 300 {
			require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
			break
		}
	}
	cmd.Wait()
	require.Len(t, acked, 150)

	svc, err := localiot.Open(localiot.Options{Path: filepath.Join(dir, "jobs.db"), Logger: zerolog.Nop()})
	require.NoError(t, err)
	defer svc.Close()
	for id, what := range acked {
		j, err := svc.DescribeJob(id)
		require.NoError(t, err, id)
		if what == "started" {
			require.Equal(t, 1, j.Counts.InProgress, id)
		}
	}
}
