package localiot_test

import (
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/localiot/mqttplane"
	"github.com/otaflow/otaflow/internal/mqtttest"
	"github.com/otaflow/otaflow/internal/pgtest"
)

// partition is a TCP path to PostgreSQL that can be cut: then every connection stays open and
// carries nothing, neither data nor a reset, as when a network drops a replica's traffic.
type partition struct {
	ln  net.Listener
	cut atomic.Bool
	wg  sync.WaitGroup
}

func newPartition(t *testing.T, target string) *partition {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &partition{ln: ln}
	t.Cleanup(func() { p.cut.Store(false); ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go p.pipe(c, s)
			go p.pipe(s, c)
		}
	}()
	return p
}

// pipe copies from src to dst, holding what it read while the path is cut.
func (p *partition) pipe(dst, src net.Conn) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		for p.cut.Load() {
			time.Sleep(10 * time.Millisecond)
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// A leader cut off from PostgreSQL (but still on the broker) steps down on its own before its
// lease can expire, another replica takes over within the lease's bound, the two never serve
// at once, and when the partition heals the old leader does not take the lead back.
func TestPartitionedLeaderStepsDown(t *testing.T) {
	direct := pgtest.DB(t)
	u, err := url.Parse(direct)
	require.NoError(t, err)
	part := newPartition(t, u.Host)
	u.Host = part.ln.Addr().String()
	b := mqtttest.Embedded(t)
	serve := func(name, pgURL string) (*localiot.Service, *mqttplane.Plane) {
		svc, err := localiot.Open(localiot.Options{PostgresURL: pgURL, ArtifactDir: t.TempDir(), Logger: zerolog.Nop()})
		require.NoError(t, err)
		plane, err := mqttplane.Serve(svc, mqttplane.Options{Exclusive: true, BrokerURL: b.URL, ClientID: "otaflow-jobs-" + name,
			Username: mqtttest.ServiceUser, Password: mqtttest.ServicePassword, Logger: zerolog.New(zerolog.NewTestWriter(t)).With().Str("replica", name).Logger()})
		require.NoError(t, err)
		return svc, plane
	}
	svcA, a := serve("a", u.String())
	require.Eventually(t, a.Leading, 10*time.Second, 20*time.Millisecond, "the first replica leads")
	svcB, bb := serve("b", direct)
	defer func() { bb.Close(); svcB.Close() }()
	time.Sleep(2 * time.Second)
	require.False(t, bb.Leading(), "one leader at a time")

	cut := time.Now()
	part.cut.Store(true)
	var steppedDown, tookOver time.Duration
	for tookOver == 0 && time.Since(cut) < 30*time.Second {
		la, lb := a.Leading(), bb.Leading()
		require.False(t, la && lb, "two leaders at %s after the partition", time.Since(cut))
		if !la && steppedDown == 0 {
			steppedDown = time.Since(cut)
		}
		if lb {
			tookOver = time.Since(cut)
		}
		time.Sleep(20 * time.Millisecond)
	}
	require.NotZero(t, steppedDown, "the partitioned leader stepped down")
	require.NotZero(t, tookOver, "another replica took over")
	require.Less(t, tookOver, 15*time.Second, "the takeover bound")
	t.Logf("partitioned leader stepped down after %s; the standby led after %s", steppedDown.Round(100*time.Millisecond), tookOver.Round(100*time.Millisecond))

	part.cut.Store(false)
	time.Sleep(3 * time.Second)
	require.True(t, bb.Leading(), "the new leader keeps the lead")
	require.False(t, a.Leading(), "the old leader does not take it back")
	a.Close()
	svcA.Close()
}
