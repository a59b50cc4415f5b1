package devserver

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"sync"
	"testing"

	enumspb "go.temporal.io/api/enums/v1"

	"github.com/otaflow/otaflow/internal/pgtest"
	"github.com/otaflow/otaflow/internal/tlog"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestTakenInternalPortIsRetried: when another process binds a port reserved for one of
// Temporal's internal services before the server does, the server's fatal "Failed to start
// gRPC listener" neither ends the process (zerolog's Fatal would) nor fails the start: the
// server comes up on other ports.
func TestTakenInternalPortIsRetried(t *testing.T) {
	thief, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer thief.Close()
	stolen := thief.Addr().(*net.TCPAddr).Port
	first := true
	reserve = func(ip string) (int, error) {
		if first {
			first = false
			return stolen, nil
		}
		return reservePort(ip)
	}
	defer func() { reserve = reservePort }()

	var logs lockedBuffer
	s, err := Start(context.Background(), Options{UIPort: -1, Logger: zerolog.New(&logs)})
	require.NoError(t, err)
	defer s.Stop()
	require.Contains(t, logs.String(), "Failed to start gRPC listener")
	require.Contains(t, logs.String(), "retrying on other internal ports")
	require.NotContains(t, s.FrontendAddr(), ":0")
}

// TestReservedPortCanBeBound: the port reservePort returns lingers in TIME_WAIT, yet a
// listener (Go sets SO_REUSEADDR) binds it at once, as the server's will.
func TestReservedPortCanBeBound(t *testing.T) {
	port, err := reservePort("127.0.0.1")
	require.NoError(t, err)
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	require.NoError(t, err, "the reserved port can be bound")
	l.Close()
}

func greet(ctx workflow.Context, name string) (string, error) { return "hello " + name, nil }

// Temporal on PostgreSQL, its schema set up by Temporal's own tool: a workflow runs, and after
// a restart on the same databases its result is still there.
func TestTemporalOnPostgres(t *testing.T) {
	ctx := context.Background()
	admin, err := url.Parse(pgtest.AdminURL(t))
	require.NoError(t, err)
	pg := &Postgres{Addr: admin.Host, User: admin.User.Username(), Database: fmt.Sprintf("temporal_%d", os.Getpid()),
		VisibilityDatabase: fmt.Sprintf("temporal_visibility_%d", os.Getpid())}
	opts := Options{UIPort: -1, FrontendPort: 0, Postgres: pg, Logger: zerolog.Nop(),
		SearchAttributes: map[string]enumspb.IndexedValueType{"OtaflowState": enumspb.INDEXED_VALUE_TYPE_KEYWORD}}
	s, err := Start(ctx, opts)
	require.NoError(t, err)
	c, err := client.Dial(client.Options{HostPort: s.FrontendAddr(), Logger: tlog.New(zerolog.Nop())})
	require.NoError(t, err)
	w := worker.New(c, "pg", worker.Options{})
	w.RegisterWorkflow(greet)
	require.NoError(t, w.Start())
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "greet", TaskQueue: "pg"}, greet, "postgres")
	require.NoError(t, err)
	var out string
	require.NoError(t, run.Get(ctx, &out))
	require.Equal(t, "hello postgres", out)
	w.Stop()
	c.Close()
	s.Stop()

	s, err = Start(ctx, opts) // the schema is in place: setup is skipped, update finds nothing to do
	require.NoError(t, err)
	defer s.Stop()
	c, err = client.Dial(client.Options{HostPort: s.FrontendAddr(), Logger: tlog.New(zerolog.Nop())})
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.GetWorkflow(ctx, "greet", "").Get(ctx, &out))
	require.Equal(t, "hello postgres", out)
}
