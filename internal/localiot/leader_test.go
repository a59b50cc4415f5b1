package localiot_test

import (
	"net/url"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/faultnet"
	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/localiot/mqttplane"
	"github.com/otaflow/otaflow/internal/mqtttest"
	"github.com/otaflow/otaflow/internal/pgtest"
)

// A leader cut off from PostgreSQL (but still on the broker) steps down on its own before its
// lease can expire, another replica takes over within the lease's bound, the two never serve
// at once, and when the partition heals the old leader does not take the lead back.
func TestPartitionedLeaderStepsDown(t *testing.T) {
	direct := pgtest.DB(t)
	u, err := url.Parse(direct)
	require.NoError(t, err)
	part, err := faultnet.NewLink(nil, "127.0.0.1:0", nil, u.Host)
	require.NoError(t, err)
	defer part.Close()
	u.Host = part.Addr()
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
	part.Partition(true)
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

	part.Partition(false)
	time.Sleep(3 * time.Second)
	require.True(t, bb.Leading(), "the new leader keeps the lead")
	require.False(t, a.Leading(), "the old leader does not take it back")
	a.Close()
	svcA.Close()
}
