package devserver

import (
	"bytes"
	"context"
	"net"
	"strconv"
	"sync"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
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
