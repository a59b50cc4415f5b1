package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/otaflow/otaflow/internal/iotjobs"
)

// simFleet is the light, protocol-level device simulator for fleets too large for one agent
// (and one MQTT connection) per device: a few MQTT sessions speak the AWS IoT Jobs device
// protocol for every thing. Each thing does what AWS documents as the minimal job run:
// notify-next names an execution, the thing updates it to IN_PROGRESS, then to SUCCEEDED, on
// its own $aws/things/{thing}/jobs topics, with versions checked by the service. Nothing is
// installed. The sessions use the jobs service's broker credentials (the only identity the
// broker lets use every thing's topics), and receive through a shared subscription, so each
// reply reaches one of them.
type simFleet struct {
	clients  []paho.Client
	inflight chan struct{} // requests awaiting their reply
	// Updates wait here for room in the inflight window, so that a message handler never
	// blocks: paho acknowledges a QoS 1 message when its handler returns, and handlers held
	// on the window left up to 65,535 unacknowledged messages per session in the broker,
	// whose once-a-second inflight sweep (mochi's ClearExpiredInflights, which copies and
	// sorts each client's) then cost a sixth of the stack's CPU at 100,000 devices. A real
	// device acknowledges at once; so does the simulator now. Endings go first: they finish
	// devices, where starts only begin them.
	queueMu  sync.Mutex
	starts   []simUpdate
	endings  []simUpdate
	queued   chan struct{}
	stop     chan struct{}
	next     atomic.Uint64
	rejected atomic.Int64
	mu       sync.Mutex
	started  map[string]bool // thing/job pairs moved to IN_PROGRESS
}

const simSessions = 8

// simUpdate is one UpdateJobExecution a simulated device is to send.
type simUpdate struct {
	thing, job string
	status     iotjobs.Status
	version    int64
}

func startSimFleet(brokerURL, user, password string) (*simFleet, error) {
	f := &simFleet{inflight: make(chan struct{}, 8192), started: map[string]bool{}, queued: make(chan struct{}, 1), stop: make(chan struct{})}
	subs := map[string]byte{}
	for _, suffix := range []string{iotjobs.SuffixNotifyNext, "+/update/accepted", "+/update/rejected"} {
		subs["$share/otaflow-sim/"+iotjobs.Topic("+", suffix)] = 1
	}
	for i := range simSessions {
		opts := paho.NewClientOptions().AddBroker(brokerURL).SetClientID(fmt.Sprintf("otaflow-jobs-sim-%d", i)).
			SetUsername(user).SetPassword(password).SetCleanSession(true).SetOrderMatters(false).SetAutoReconnect(true)
		c := paho.NewClient(opts)
		if tok := c.Connect(); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
			f.close()
			return nil, fmt.Errorf("simulator session %d: connect to %s: %v", i, brokerURL, tok.Error())
		}
		f.clients = append(f.clients, c)
		if tok := c.SubscribeMultiple(subs, f.handle); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
			f.close()
			return nil, fmt.Errorf("simulator session %d: subscribe: %v", i, tok.Error())
		}
	}
	// Sends start once every session is in f.clients (which they share); what the first
	// sessions' handlers queue meanwhile waits.
	go f.pump()
	return f, nil
}

// SimPasswordEnv carries the broker password to `starter simfleet` (never in its arguments,
// which any user of the machine can read).
const SimPasswordEnv = "OTAFLOW_SIM_PASSWORD"

// RunSimFleet runs the simulator until ctx ends, saying "connected" on out once its sessions
// are subscribed. `starter simfleet` runs it in a process of its own, so that what the
// simulated devices spend is not counted as the stack's CPU (a fleet of agents is not either).
func RunSimFleet(ctx context.Context, brokerURL, user, password string, out io.Writer) error {
	f, err := startSimFleet(brokerURL, user, password)
	if err != nil {
		return err
	}
	defer f.close()
	fmt.Fprintln(out, "connected")
	<-ctx.Done()
	return nil
}

func (f *simFleet) close() {
	close(f.stop)
	for _, c := range f.clients {
		c.Disconnect(100)
	}
}

// update queues a request to move thing's execution of job to status, from version; it
// never blocks.
func (f *simFleet) update(thing, job string, status iotjobs.Status, version int64) {
	u := simUpdate{thing: thing, job: job, status: status, version: version}
	f.queueMu.Lock()
	if status == iotjobs.StatusInProgress {
		f.starts = append(f.starts, u)
	} else {
		f.endings = append(f.endings, u)
	}
	f.queueMu.Unlock()
	select {
	case f.queued <- struct{}{}:
	default:
	}
}

// pump sends queued updates as the inflight window has room, until the fleet closes.
func (f *simFleet) pump() {
	for {
		f.queueMu.Lock()
		var u simUpdate
		ok := true
		switch {
		case len(f.endings) > 0:
			u, f.endings = f.endings[0], f.endings[1:]
		case len(f.starts) > 0:
			u, f.starts = f.starts[0], f.starts[1:]
		default:
			ok = false
		}
		f.queueMu.Unlock()
		if !ok {
			select {
			case <-f.queued:
				continue
			case <-f.stop:
				return
			}
		}
		select {
		case f.inflight <- struct{}{}:
		case <-f.stop:
			return
		}
		body, _ := json.Marshal(iotjobs.UpdateRequest{Status: u.status, ExpectedVersion: u.version, IncludeJobExecutionState: true})
		c := f.clients[f.next.Add(1)%uint64(len(f.clients))]
		c.Publish(iotjobs.Topic(u.thing, iotjobs.UpdateSuffix(u.job)), 1, false, body)
	}
}

func (f *simFleet) done() {
	select {
	case <-f.inflight:
	default:
	}
}

func (f *simFleet) handle(_ paho.Client, m paho.Message) {
	rest := strings.TrimPrefix(m.Topic(), iotjobs.TopicPrefix)
	thing, suffix, ok := strings.Cut(rest, "/jobs/")
	if !ok {
		return
	}
	switch {
	case suffix == iotjobs.SuffixNotifyNext:
		var n iotjobs.NotifyNext
		if json.Unmarshal(m.Payload(), &n) != nil || n.Execution == nil || n.Execution.Status != iotjobs.StatusQueued {
			return
		}
		key := thing + "/" + n.Execution.JobID
		f.mu.Lock()
		again := f.started[key]
		f.started[key] = true
		f.mu.Unlock()
		if !again {
			f.update(thing, n.Execution.JobID, iotjobs.StatusInProgress, n.Execution.VersionNumber)
		}
	case strings.HasSuffix(suffix, "/update/accepted"):
		f.done()
		var r iotjobs.UpdateReply
		if json.Unmarshal(m.Payload(), &r) != nil || r.ExecutionState == nil {
			return
		}
		if r.ExecutionState.Status == iotjobs.StatusInProgress {
			job := strings.TrimSuffix(suffix, "/update/accepted")
			f.update(thing, job, iotjobs.StatusSucceeded, r.ExecutionState.VersionNumber)
		}
	case strings.HasSuffix(suffix, "/update/rejected"):
		f.done()
		f.rejected.Add(1)
	}
}
