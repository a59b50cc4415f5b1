package stack_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"github.com/otaflow/otaflow/internal/cliconfig"
	"github.com/otaflow/otaflow/internal/devserver"
	"github.com/otaflow/otaflow/internal/faultnet"
	"github.com/otaflow/otaflow/internal/iotclient"
	"github.com/otaflow/otaflow/internal/mqtttest"
	"github.com/otaflow/otaflow/internal/pgtest"
	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/internal/rolloutworker"
	"github.com/otaflow/otaflow/internal/tlog"
	"github.com/otaflow/otaflow/workflows/contract"
)

// chaosEnv set (make chaos) runs the long faults: the durations, and the faults that
// hit every replica at once.
const chaosEnv = "OTAFLOW_CHAOS"

// nsReplica is a jobs-service replica in a network namespace of its own, whose only ways out
// are links the test can fault: to PostgreSQL, to the broker and to Temporal (and, inward,
// its REST port).
type nsReplica struct {
	*replica
	db, broker *faultnet.Link
}

const leads = "now serves device requests (leader)"

// leaderChanges counts how often a replica has taken the lead so far.
func (r *nsReplica) leaderChanges() int { return strings.Count(r.logs.String(), leads) }

// TestReplicaFaults puts the production shape (two jobs-service replicas on one PostgreSQL
// database behind Debian's mosquitto, two workers) through the faults that used to leave
// devices unanswered or recorded wrong, one after another during one rollout: the leader is
// frozen (SIGSTOP, as a long stall), then partitioned from PostgreSQL through its network
// namespace while it still reaches the broker, then SIGKILLed. After each, the other replica
// must lead within 15 s, with no human step; at the end every device is updated exactly once
// and the database agrees with every device. With OTAFLOW_CHAOS=1 (make chaos) the freeze is
// 60 s and the partition 2 min, as in the field report, and PostgreSQL going down for 20 s
// and a mosquitto SIGKILL follow. (The skewed clock is TestReplicaWithASkewedClockUsesTheDatabasesClock:
// a process's wall clock cannot be skewed from outside it here.)
func TestReplicaFaults(t *testing.T) {
	long := os.Getenv(chaosEnv) != ""
	freeze, partition := 15*time.Second, 20*time.Second
	if long {
		freeze, partition = time.Minute, 2*time.Minute
	}
	ctx := context.Background()
	temporal, err := devserver.Start(ctx, devserver.Options{UIPort: -1, Logger: zerolog.Nop(), SearchAttributes: rolloutworker.SearchAttributes()})
	require.NoError(t, err)
	defer temporal.Stop()
	tc, err := client.Dial(client.Options{HostPort: temporal.FrontendAddr(), Logger: tlog.New(zerolog.Nop())})
	require.NoError(t, err)
	defer tc.Close()

	broker := mqtttest.Mosquitto(t)
	jobsDB, artifacts := pgtest.DB(t), t.TempDir()
	dbURL, err := url.Parse(jobsDB)
	require.NoError(t, err)
	brokerAddr := strings.TrimPrefix(broker.URL, "tcp://")
	const secret = "chaos-secret-key"
	replicas := make([]*nsReplica, 2)
	for i := range replicas {
		ns, err := faultnet.NewNamespace()
		require.NoError(t, err, "the fault test makes network namespaces (it runs as root in CI)")
		defer ns.Close()
		r := &nsReplica{}
		// Inside its namespace the replica finds its peers at their usual addresses.
		link := func(target string) *faultnet.Link {
			l, err := faultnet.NewLink(ns, target, nil, target)
			require.NoError(t, err)
			t.Cleanup(l.Close)
			return l
		}
		r.db, r.broker = link(dbURL.Host), link(brokerAddr)
		link(temporal.FrontendAddr())
		addr := freeAddr(t)
		rest, err := faultnet.NewLink(nil, addr, ns, addr)
		require.NoError(t, err)
		defer rest.Close()
		r.replica = &replica{t: t, name: fmt.Sprintf("replica-%d", i+1), URL: "http://" + addr, ns: ns,
			args: replicaArgs(jobsDB, artifacts, broker.URL, addr, temporal.FrontendAddr()), env: replicaEnv(secret)}
		r.start()
		defer func() {
			r.cmd.Process.Signal(syscall.SIGCONT)
			r.kill()
		}()
		r.logOnFailure()
		replicas[i] = r
	}

	const n = 80
	iotc, err := iotclient.NewIoT(ctx, iotclient.Config{Endpoint: replicas[0].URL, Region: cliconfig.DefaultRegion,
		AccessKeyID: cliconfig.DefaultAccessKeyID, SecretAccessKey: secret})
	require.NoError(t, err)
	arns, things := registerThings(t, iotc, n)
	f, counter := faultFleet(t, broker, things)

	for _, r := range replicas {
		w := workerProcess(t, temporal.FrontendAddr(), r.URL, secret)
		defer func() { w.Process.Kill(); w.Wait() }()
	}

	leader := func() *nsReplica {
		var out *nsReplica
		require.Eventually(t, func() bool {
			// The leader is the replica that took the lead last.
			best := time.Time{}
			for _, r := range replicas {
				if at := lastLeadAt(r.logs.String()); !at.IsZero() && at.After(best) {
					best, out = at, r
				}
			}
			return out != nil
		}, 15*time.Second, 20*time.Millisecond, "a replica leads")
		return out
	}
	// fault applies a fault to the leader, lasting d, and measures how long the other
	// replica took to lead.
	var figures []string
	fault := func(name string, d time.Duration, begin, end func(r *nsReplica)) {
		victim := leader()
		other := replicas[0]
		if other == victim {
			other = replicas[1]
		}
		before := other.leaderChanges()
		start := time.Now()
		begin(victim)
		require.Eventually(t, func() bool { return other.leaderChanges() > before }, 15*time.Second, 20*time.Millisecond,
			"%s: %s takes over within 15 s of the fault to %s", name, other.name, victim.name)
		failover := time.Since(start)
		time.Sleep(max(d-failover, 0))
		end(victim)
		fenced := strings.Count(victim.logs.String(), "lost the leader's lease before its write committed")
		figures = append(figures, fmt.Sprintf("%s of %s for %s: %s led after %s (writes fenced off the old leader: %d)",
			name, victim.name, d, other.name, failover.Round(100*time.Millisecond), fenced))
		time.Sleep(3 * time.Second) // the rollout moves on between faults
	}

	perMinute := 60 // the releases outlast the short faults
	if long {
		perMinute = 20 // and the long ones
	}
	req := faultRequest("replica-faults", arns, perMinute)
	req.Waves = "10%,40%,100%"
	run, err := rolloutclient.Start(ctx, tc, contract.TaskQueue, req)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		st, err := rolloutclient.Status(ctx, tc, "replica-faults")
		return err == nil && st.Counts.Succeeded >= 3
	}, 2*time.Minute, 50*time.Millisecond, "the rollout is under way")

	fault("freeze (SIGSTOP)", freeze,
		func(r *nsReplica) { r.cmd.Process.Signal(syscall.SIGSTOP) },
		func(r *nsReplica) { r.cmd.Process.Signal(syscall.SIGCONT) })
	fault("partition from PostgreSQL", partition,
		func(r *nsReplica) { r.db.Partition(true) },
		func(r *nsReplica) { r.db.Partition(false) })
	fault("SIGKILL", 2*time.Second,
		func(r *nsReplica) { r.kill() },
		func(r *nsReplica) { r.start() })
	if long {
		takeovers := func() int { return replicas[0].leaderChanges() + replicas[1].leaderChanges() }
		before := takeovers()
		for _, r := range replicas {
			r.db.Down(true)
		}
		time.Sleep(20 * time.Second)
		for _, r := range replicas {
			r.db.Down(false)
		}
		upAt := time.Now()
		require.Eventually(t, func() bool { return takeovers() > before }, 30*time.Second, 20*time.Millisecond,
			"a replica leads again once PostgreSQL is back")
		figures = append(figures, fmt.Sprintf("PostgreSQL down for 20 s (every connection reset, new ones refused): the leader stepped down; a replica led again %s after it came back",
			time.Since(upAt).Round(100*time.Millisecond)))
		require.NoError(t, broker.Restart(2*time.Second))
		figures = append(figures, "mosquitto SIGKILLed and started again 2 s later")
	}

	res, err := rolloutclient.Result(ctx, run)
	require.NoError(t, err, res.Message)
	require.Equal(t, contract.StateSucceeded, res.State, res.Message)
	counter.requireExactlyOnce(t, n, &res, func(th string) string { return f.InstalledVersion(th, "core") })
	// The database agrees with every device: each execution SUCCEEDED, none TIMED_OUT.
	for _, th := range things {
		out, err := iotc.ListJobExecutionsForThing(ctx, &iot.ListJobExecutionsForThingInput{ThingName: aws.String(th)})
		require.NoError(t, err)
		require.NotEmpty(t, out.ExecutionSummaries, th)
		for _, e := range out.ExecutionSummaries {
			require.Equal(t, "SUCCEEDED", string(e.JobExecutionSummary.Status), "%s: the database says %s while the device runs %s", th, e.JobExecutionSummary.Status, f.InstalledVersion(th, "core"))
		}
	}
	for _, fig := range figures {
		t.Log(fig)
	}
}

// lastLeadAt is when a replica's log last says it took the lead (zero: never), from the
// JSON log line's time.
func lastLeadAt(logs string) time.Time {
	i := strings.LastIndex(logs, leads)
	if i < 0 {
		return time.Time{}
	}
	line := logs[strings.LastIndex(logs[:i], "\n")+1:]
	if j := strings.Index(line, `"time":"`); j >= 0 {
		if at, err := time.Parse(time.RFC3339, strings.SplitN(line[j+8:], `"`, 2)[0]); err == nil {
			return at
		}
	}
	return time.Now()
}
