// Package pgtest runs Debian's PostgreSQL for tests: one server per test run, a fresh
// database per test. `make test` starts the server once (withpg) and every test package
// shares it through OTAFLOW_TEST_POSTGRES; a package run on its own starts its own server.
package pgtest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otaflow/otaflow/internal/pgserver"
)

// EnvURL names a running server (an admin URL, database "postgres") for tests to share.
const EnvURL = "OTAFLOW_TEST_POSTGRES"

var (
	shared     string
	sharedErr  error
	sharedOnce sync.Once
	dbSeq      atomic.Int64
)

// admin is the shared server's admin URL: OTAFLOW_TEST_POSTGRES's, or a server this test
// process starts on first use (it ends with the process).
func admin() (string, error) {
	sharedOnce.Do(func() {
		if shared = os.Getenv(EnvURL); shared != "" {
			return
		}
		dir, err := os.MkdirTemp("", "otaflow-pgtest-")
		if err != nil {
			sharedErr = err
			return
		}
		s, err := pgserver.Start(dir, pgserver.Options{})
		if err != nil {
			sharedErr = err
			return
		}
		shared = s.URL
	})
	return shared, sharedErr
}

// AdminURL is the shared server's admin URL, for tests that create databases themselves.
func AdminURL(t testing.TB) string {
	t.Helper()
	u, err := admin()
	if err != nil {
		t.Fatalf("PostgreSQL for tests: %v", err)
	}
	return u
}

// DB creates an empty database for this test and returns its URL; it is dropped when the
// test ends.
func DB(t testing.TB) string {
	t.Helper()
	u := AdminURL(t)
	name := fmt.Sprintf("t%d_%d_%s", os.Getpid(), dbSeq.Add(1), sanitize(t.Name()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url, err := pgserver.CreateDatabase(ctx, u, name)
	if err != nil {
		t.Fatalf("test PostgreSQL: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		pgserver.DropDatabase(ctx, u, name)
	})
	return url
}

func sanitize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
		if b.Len() >= 30 {
			break
		}
	}
	return b.String()
}
