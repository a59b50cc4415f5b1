package stack_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/internal/rolloutops"
	"github.com/otaflow/otaflow/internal/stack"
	"github.com/otaflow/otaflow/workflows/contract"
)

// receiver is a webhook receiver that checks every delivery's signature and keeps each event
// once (by delivery ID); it refuses the first delivery it sees, to prove retries.
type receiver struct {
	t      *testing.T
	secret []byte
	mu     sync.Mutex
	seen   map[string]bool
	events []contract.WebhookEvent
	tries  int
	bad    int
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if err := rolloutops.VerifyWebhook(rc.secret, r.Header, body, 5*time.Minute, time.Now()); err != nil {
		rc.bad++
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	rc.tries++
	if rc.tries == 1 {
		http.Error(w, "receiver restarting", http.StatusServiceUnavailable)
		return
	}
	var ev contract.WebhookEvent
	if err := json.Unmarshal(body, &ev); err != nil {
		rc.t.Errorf("webhook body: %v", err)
	}
	require.Equal(rc.t, ev.Event, r.Header.Get(contract.HeaderWebhookEvent))
	if id := r.Header.Get(contract.HeaderWebhookDelivery); !rc.seen[id] {
		rc.seen[id] = true
		rc.events = append(rc.events, ev)
	}
	w.WriteHeader(http.StatusNoContent)
}

// of are the events received for a rollout, in the order they happened.
func (rc *receiver) of(rollout string) []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var evs []contract.WebhookEvent
	for _, e := range rc.events {
		if e.RolloutID == rollout {
			evs = append(evs, e)
		}
	}
	slices.SortStableFunc(evs, func(a, b contract.WebhookEvent) int { return a.Time.Compare(b.Time) })
	var out []string
	for _, e := range evs {
		out = append(out, e.Event)
	}
	return out
}

// Rollout webhooks, against a local receiver: each event of a rollout (started, waves passed,
// waiting for approval, succeeded; for an aborted one rolling back, rolled back, aborted) is
// POSTed once, signed with the worker's secret, and delivered although the receiver refused
// the first attempt; a wrong secret does not verify. The worker's metrics count the events.
func TestRolloutWebhooks(t *testing.T) {
	ctx := context.Background()
	s := startStack(t)
	arns, err := s.StartDevices(ctx, 4, "1.10.2", 0)
	require.NoError(t, err)
	rc := &receiver{t: t, secret: s.WebhookSecret, seen: map[string]bool{}}
	srv := httptest.NewServer(rc)
	defer srv.Close()

	req := request("hooks-ok", arns)
	req.Waves, req.ApproveWaves, req.Webhooks = "1,100%", true, []string{srv.URL + "/otaflow"}
	run, err := rolloutclient.Start(ctx, s.Client, contract.TaskQueue, req)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return slices.Contains(rc.of("hooks-ok"), contract.EventAwaitingApproval) }, 30*time.Second, 50*time.Millisecond,
		"events so far: %v", rc.of("hooks-ok"))
	_, err = rolloutclient.Control(ctx, s.Client, "hooks-ok", contract.UpdateApprove)
	require.NoError(t, err)
	res, err := rolloutclient.Result(ctx, run)
	require.NoError(t, err, res.Message)
	want := []string{contract.EventStarted, contract.EventWavePassed, contract.EventAwaitingApproval, contract.EventWavePassed, contract.EventSucceeded}
	require.Eventually(t, func() bool { return slices.Equal(rc.of("hooks-ok"), want) }, 30*time.Second, 50*time.Millisecond,
		"events: %v (the refused first one is sent again)", rc.of("hooks-ok"))
	rc.mu.Lock()
	var last contract.WebhookEvent
	for _, e := range rc.events {
		if e.Event == contract.EventSucceeded {
			last = e
		}
	}
	rc.mu.Unlock()
	require.Equal(t, contract.StateSucceeded, last.State)
	require.Equal(t, 4, last.Counts.Succeeded)

	// An aborted rollout with rollback.
	s.SetDeviceFaults([]string{stack.Device(2)}, nil)
	req = request("hooks-abort", arns)
	req.Waves, req.OnFailure, req.Webhooks = "1,100%", contract.OnFailureRollback, []string{srv.URL + "/otaflow"}
	setVersion(&req, "1.12.0")
	run, err = rolloutclient.Start(ctx, s.Client, contract.TaskQueue, req)
	require.NoError(t, err)
	res, _ = rolloutclient.Result(ctx, run)
	require.Equal(t, contract.StateAborted, res.State, res.Message)
	require.Eventually(t, func() bool {
		return slices.Equal(rc.of("hooks-abort"), []string{contract.EventStarted, contract.EventWavePassed, contract.EventRollingBack, contract.EventRolledBack, contract.EventAborted})
	}, 30*time.Second, 50*time.Millisecond, "events: %v", rc.of("hooks-abort"))
	rc.mu.Lock()
	require.Zero(t, rc.bad, "every delivery verified")
	rc.mu.Unlock()

	// Signed with another secret, it does not verify.
	h := http.Header{}
	h.Set(contract.HeaderWebhookTimestamp, "1")
	h.Set(contract.HeaderWebhookSignature, rolloutops.SignWebhook([]byte("other"), "1", []byte("{}")))
	require.Error(t, rolloutops.VerifyWebhook(s.WebhookSecret, h, []byte("{}"), time.Hour, time.Unix(2, 0)))
	require.ErrorContains(t, rolloutops.VerifyWebhook([]byte("other"), h, []byte("{}"), time.Minute, time.Unix(3600, 0)), "older than")

	// The worker's metrics count them, beside the Temporal SDK's.
	resp, err := http.Get(s.JobsURL + "/metrics")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Contains(t, string(body), "# TYPE otaflow_rollout_events_total counter")
	require.Regexp(t, `otaflow_rollout_events_total\{[^}]*event="rollout.succeeded"[^}]*\} 1\n`, string(body))
	require.Regexp(t, `otaflow_rollout_events_total\{[^}]*event="rollout.aborted"[^}]*\} 1\n`, string(body))
	require.Contains(t, string(body), "temporal_workflow_completed_total")
}
