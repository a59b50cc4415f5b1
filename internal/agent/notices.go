package agent

import (
	"encoding/json"
	"strconv"
	"sync"

	"github.com/otaflow/otaflow/internal/iotjobs"
)

// What the jobs service tells a device unasked, and how it saves the device asking.
//
// AWS IoT publishes notify-next with the thing's next pending execution, job document
// included, whenever that execution changes (and without one when nothing is pending), and
// notify with the pending lists when they change. A pass that follows a notify-next needs
// neither GetPendingJobExecutions nor DescribeJobExecution: a QUEUED otaflow update it names
// is started at once, and "nothing pending" is believed. A pass with no news (the idle
// recheck, a reconnect, a retry after an error), a notify that lists a job no notify-next
// named (one queued behind another software's job), or news the agent cannot use (an
// execution in progress, another software's job) asks as before. A notice that is stale
// by the time it is used (the job was canceled meanwhile) costs one refused update, then
// the agent asks. The agent's subscription keeps messages in order (paho's OrderMatters),
// so the last notify-next received is the service's latest word.
//
// With the first report doubling as the device's claim (no separate "accepted" update),
// a switch-only job costs a device two Jobs API calls where it cost six (GetPending,
// Describe, accepted, installing, SUCCEEDED and GetPending again): the calls a fleet's broker
// and jobs service spend most of their CPU on, and what AWS bills per message.
type notices struct {
	mu sync.Mutex
	// heard: a notify-next came since the last pass took the news; next is what it named
	// (nil: nothing pending).
	heard bool
	next  *iotjobs.JobExecution
	// ask: the next pass must ask (a reconnect, or a notify naming a job never heard of).
	ask bool
	// known are the jobs a notify-next named or a pass saw, so that notify's lists, which
	// repeat them, wake nobody. Bounded: forgetting only costs a pass that asks.
	known map[string]bool
	// ended is the execution this agent last reported terminal: a notice naming it is stale.
	ended string
}

const maxKnownJobs = 256

func (n *notices) learn(jobID string) {
	if n.known == nil || len(n.known) >= maxKnownJobs {
		n.known = map[string]bool{}
	}
	n.known[jobID] = true
}

// nextNotice records a notify-next payload. It reports whether the agent should wake.
func (n *notices) nextNotice(payload []byte) bool {
	var msg iotjobs.NotifyNext
	if json.Unmarshal(payload, &msg) != nil {
		n.mu.Lock()
		n.ask = true // unreadable news: ask
		n.mu.Unlock()
		return true
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.heard, n.next = true, msg.Execution
	if msg.Execution != nil {
		n.learn(msg.Execution.JobID)
	}
	return true
}

// listNotice records a notify payload: it wakes the agent only when it lists a job that no
// notify-next named and no pass saw.
func (n *notices) listNotice(payload []byte) bool {
	var msg iotjobs.Notify
	if json.Unmarshal(payload, &msg) != nil {
		n.mu.Lock()
		n.ask = true
		n.mu.Unlock()
		return true
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, list := range msg.Jobs {
		for _, j := range list {
			if !n.known[j.JobID] {
				n.ask = true
				return true
			}
		}
	}
	return false
}

// askNext makes the next pass ask the service (after a reconnect: news may have been lost).
func (n *notices) askNext() {
	n.mu.Lock()
	n.ask, n.heard, n.next = true, false, nil
	n.mu.Unlock()
}

// ending records that the agent reports an execution terminal.
func (n *notices) ending(jobID string, executionNumber int64) {
	n.mu.Lock()
	n.ended = jobID + "#" + strconv.FormatInt(executionNumber, 10)
	n.mu.Unlock()
}

// saw records jobs a pass found pending.
func (n *notices) saw(jobIDs ...string) {
	n.mu.Lock()
	for _, id := range jobIDs {
		n.learn(id)
	}
	n.mu.Unlock()
}

// take returns the news for a pass and clears it: ask is true when the pass must ask the
// service; otherwise next is the execution to start, or nil when nothing is pending.
func (n *notices) take() (next *iotjobs.JobExecution, ask bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	next, ask, heard := n.next, n.ask, n.heard
	n.next, n.ask, n.heard = nil, false, false
	if ask || !heard {
		return nil, true
	}
	if next != nil && next.Status != iotjobs.StatusQueued {
		return nil, true // in progress (a resumed job): the pass looks at it in full
	}
	if next != nil && next.JobID+"#"+strconv.FormatInt(next.ExecutionNumber, 10) == n.ended {
		return nil, true // news of an execution this agent has ended: stale
	}
	return next, false
}
