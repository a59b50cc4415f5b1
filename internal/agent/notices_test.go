package agent

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/iotjobs"
)

func notifyNext(t *testing.T, e *iotjobs.JobExecution) []byte {
	raw, err := json.Marshal(iotjobs.NotifyNext{Timestamp: 1, Execution: e})
	require.NoError(t, err)
	return raw
}

func notifyList(t *testing.T, queued ...string) []byte {
	msg := iotjobs.Notify{Timestamp: 1, Jobs: map[iotjobs.Status][]iotjobs.JobExecutionSummary{}}
	for _, id := range queued {
		msg.Jobs[iotjobs.StatusQueued] = append(msg.Jobs[iotjobs.StatusQueued], iotjobs.JobExecutionSummary{JobID: id})
	}
	raw, err := json.Marshal(msg)
	require.NoError(t, err)
	return raw
}

// A notify-next names the next execution with its document: the agent starts a queued update
// from it without GetPendingJobExecutions or DescribeJobExecution, and believes "nothing
// pending" when the next one says so. Without news (an idle recheck, a reconnect) it asks.
func TestNotifyNextSavesTheAsking(t *testing.T) {
	a, in, jobs := withFakeJobs(t, "")
	jobs.mu.Lock()
	queued := jobs.exec
	jobs.mu.Unlock()

	require.True(t, a.notices.nextNotice(notifyNext(t, &queued)))
	require.False(t, a.notices.listNotice(notifyList(t, queued.JobID)), "notify repeating the job notify-next named wakes nobody")
	did, err := a.processNext(context.Background())
	require.NoError(t, err)
	require.True(t, did)
	require.Equal(t, "2.0.0", a.InstalledVersion("core"))
	require.Equal(t, []string{"prepare", "install", "switch", "start", "verify", "commit"}, in.steps)
	jobs.mu.Lock()
	require.Zero(t, jobs.asked, "started from the notice: no GetPending, no Describe")
	require.Equal(t, iotjobs.StatusSucceeded, jobs.exec.Status)
	for i, u := range jobs.updates {
		require.EqualValues(t, i+1, u.ExpectedVersion, "update %d carries the version it expects", i)
	}
	jobs.mu.Unlock()

	// A late copy of the notice that started it (one that crossed a pass which asked) is
	// stale: the agent asks instead of running the job again.
	require.True(t, a.notices.nextNotice(notifyNext(t, &queued)))
	did, err = a.processNext(context.Background())
	require.NoError(t, err)
	require.False(t, did)
	jobs.mu.Lock()
	require.Equal(t, 1, jobs.asked, "one GetPending, which lists nothing")
	jobs.asked = 0
	jobs.mu.Unlock()

	// The job's end: notify-next without an execution.
	require.True(t, a.notices.nextNotice(notifyNext(t, nil)))
	require.False(t, a.notices.listNotice(notifyList(t)), "an empty notify wakes nobody")
	did, err = a.processNext(context.Background())
	require.NoError(t, err)
	require.False(t, did)
	jobs.mu.Lock()
	require.Zero(t, jobs.asked, "nothing pending, as the service said")
	jobs.mu.Unlock()

	// No news: ask.
	did, err = a.processNext(context.Background())
	require.NoError(t, err)
	require.False(t, did)
	jobs.mu.Lock()
	require.Equal(t, 1, jobs.asked)
	jobs.mu.Unlock()

	// A reconnect forgets what was heard: ask.
	require.True(t, a.notices.nextNotice(notifyNext(t, nil)))
	a.notices.askNext()
	_, err = a.processNext(context.Background())
	require.NoError(t, err)
	jobs.mu.Lock()
	require.Equal(t, 2, jobs.asked)
	jobs.mu.Unlock()
}

// A notice that went stale (the execution moved on before the device used it) costs one
// refused update; then the agent asks and does what the service says now.
func TestStaleNotifyNextFallsBackToAsking(t *testing.T) {
	a, in, jobs := withFakeJobs(t, "")
	jobs.mu.Lock()
	stale := jobs.exec
	jobs.exec.VersionNumber = 3 // changed since the notice (say, re-queued by a retry)
	jobs.mu.Unlock()
	a.notices.nextNotice(notifyNext(t, &stale))
	did, err := a.processNext(context.Background())
	require.NoError(t, err)
	require.True(t, did)
	require.Equal(t, "2.0.0", a.InstalledVersion("core"))
	require.NotEmpty(t, in.steps)
	jobs.mu.Lock()
	defer jobs.mu.Unlock()
	require.Equal(t, 2, jobs.asked, "after the refused claim: GetPending and Describe")
	require.EqualValues(t, 3, jobs.updates[0].ExpectedVersion)
	require.Equal(t, iotjobs.StatusSucceeded, jobs.exec.Status)
}

// notify wakes the agent only for a job it has not heard of (one queued behind another
// software's job, which notify-next keeps naming); what a pass saw is known too.
func TestNotifyWakesOnlyForNewJobs(t *testing.T) {
	var n notices
	require.True(t, n.listNotice(notifyList(t, "other-software-job")))
	_, ask := n.take()
	require.True(t, ask)
	n.saw("other-software-job")
	require.False(t, n.listNotice(notifyList(t, "other-software-job")))
	require.True(t, n.listNotice(notifyList(t, "other-software-job", "update-2")))
	_, ask = n.take()
	require.True(t, ask, "a new job behind another: look at them all")
	require.True(t, n.listNotice([]byte("{not json")))
	_, ask = n.take()
	require.True(t, ask)
}
