// withpg runs a command beside one PostgreSQL server: `go run ./internal/pgtest/withpg --
// make unit e2e`. The command's tests share the server through OTAFLOW_TEST_POSTGRES, so a
// test run starts PostgreSQL once, not once per package.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"

	"github.com/otaflow/otaflow/internal/pgserver"
	"github.com/otaflow/otaflow/internal/pgtest"
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: withpg -- COMMAND [ARGS...]")
		os.Exit(2)
	}
	os.Exit(run(args))
}

func run(args []string) int {
	dir, err := os.MkdirTemp("", "otaflow-pg-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "withpg:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	s, err := pgserver.Start(dir, pgserver.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "withpg:", err)
		return 1
	}
	defer s.Stop()
	fmt.Fprintf(os.Stderr, "withpg: PostgreSQL for the tests at %s (%s)\n", s.URL, dir)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), pgtest.EnvURL+"="+s.URL)
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		fmt.Fprintln(os.Stderr, "withpg:", err)
		return 1
	}
	return 0
}
