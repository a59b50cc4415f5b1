package localiot

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/otaflow/otaflow/internal/localiot/store"
)

// The audit log: every change made through the REST API, the console and the CLI's steering,
// every sign-in and every refused attempt, recorded once in the jobs store (bbolt or
// PostgreSQL) with who, when, from where, what, on which resource, the reason given and the
// outcome. No API changes or deletes an entry.

const recordAudit = "audit"

// AuditEntry is one recorded action.
type AuditEntry struct {
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	// Who is the access key, console user or "anonymous" (a refused, unsigned attempt).
	Who  string `json:"who"`
	Role Role   `json:"role,omitempty"`
	// Via is how it came: rest, console, cli, sign-in.
	Via  string `json:"via"`
	From string `json:"from,omitempty"`
	// Action is AWS's operation name (CreateJob) or otaflow's (rollout.pause, sign-in).
	Action   string `json:"action"`
	Resource string `json:"resource,omitempty"`
	Reason   string `json:"reason,omitempty"`
	// Outcome is "ok", "denied" (outside the role or its groups), "refused" (not
	// authenticated) or the error AWS would name (InvalidRequestException).
	Outcome string `json:"outcome"`
	Detail  string `json:"detail,omitempty"`
}

// Audit outcomes.
const (
	OutcomeOK      = "ok"
	OutcomeDenied  = "denied"
	OutcomeRefused = "refused"
)

func auditName(seq uint64) string { return fmt.Sprintf("%020d", seq) }

// Audit records an entry. It returns at once: a writer commits the entries queued meanwhile
// together, a moment later (a write request does not wait for a commit of its own, which cost
// the rollout path a tenth of its speed); AuditLog, and Close, wait for what was queued before.
func (s *Service) Audit(e AuditEntry) error {
	if e.Time.IsZero() {
		e.Time = s.Clock()
	}
	e.Detail = truncate(e.Detail, 1024)
	e.Reason = truncate(e.Reason, 1024)
	a := &s.auditQ
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return fmt.Errorf("the jobs service is closing: audit entry of %s %s not recorded", e.Who, e.Action)
	}
	a.pending = append(a.pending, e)
	a.queued++
	select {
	case a.wake <- struct{}{}:
	default:
	}
	return nil
}

// auditQueue holds the entries not yet committed.
type auditQueue struct {
	mu      sync.Mutex
	cond    *sync.Cond
	pending []AuditEntry
	// queued and written count entries; a flush waits until written reaches queued.
	queued, written uint64
	wake            chan struct{}
	closed          bool
}

// runAuditWriter commits queued entries until the service closes, then the rest.
func (s *Service) runAuditWriter() {
	defer s.swept.Done()
	a := &s.auditQ
	for {
		stopping := false
		select {
		case <-a.wake:
		case <-s.stopSweep:
			stopping = true
		}
		a.mu.Lock()
		batch := a.pending
		a.pending = nil
		if stopping {
			a.closed = true
		}
		a.mu.Unlock()
		if len(batch) > 0 {
			err := s.st.Update(func(t store.Tx) error {
				for i := range batch {
					seq, err := t.NextID("record")
					if err != nil {
						return err
					}
					batch[i].Seq = seq
					if err := putRecord(t, recordAudit, auditName(seq), batch[i]); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				s.log.Error().Err(err).Int("entries", len(batch)).Str("first", batch[0].Who+" "+batch[0].Action).Msg("audit: could not record entries")
			}
		}
		a.mu.Lock()
		a.written += uint64(len(batch))
		a.cond.Broadcast()
		a.mu.Unlock()
		if stopping {
			return
		}
	}
}

// flushAudit waits until every entry queued before it is committed.
func (s *Service) flushAudit() {
	a := &s.auditQ
	a.mu.Lock()
	defer a.mu.Unlock()
	want := a.queued
	for a.written < want { // the writer counts every entry it takes, written or not
		a.cond.Wait()
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// Refused, unauthenticated attempts cost nothing to send: at most refusedPerMinute of them
// are recorded, and the next recorded one says how many were not.
const refusedPerMinute = 60

type auditLimiter struct {
	mu      sync.Mutex
	l       *rate.Limiter
	dropped int
}

// AuditRefused records an attempt that could not be authenticated, within the limit.
func (s *Service) AuditRefused(e AuditEntry) {
	a := &s.auditRefused
	a.mu.Lock()
	if a.l == nil {
		a.l = rate.NewLimiter(rate.Every(time.Minute/refusedPerMinute), refusedPerMinute)
	}
	if !a.l.Allow() {
		a.dropped++
		a.mu.Unlock()
		return
	}
	if a.dropped > 0 {
		e.Detail += fmt.Sprintf(" (and %d refused attempts before this one were not recorded: more than %d a minute)", a.dropped, refusedPerMinute)
		a.dropped = 0
	}
	a.mu.Unlock()
	e.Outcome = OutcomeRefused
	if e.Who == "" {
		e.Who = "anonymous"
	}
	s.Audit(e)
}

// AuditQuery selects entries: every set field must match (Resource and Action by prefix).
type AuditQuery struct {
	Who, Action, Resource, Outcome, Via string
	Since, Until                        time.Time
	// Oldest lists oldest first; newest first otherwise.
	Oldest bool
	Limit  int
	// NextToken continues a listing where the last page ended.
	NextToken string
}

func (q AuditQuery) matches(e *AuditEntry) bool {
	return (q.Who == "" || e.Who == q.Who) && (q.Outcome == "" || e.Outcome == q.Outcome) && (q.Via == "" || e.Via == q.Via) &&
		strings.HasPrefix(e.Action, q.Action) && strings.HasPrefix(e.Resource, q.Resource) &&
		(q.Since.IsZero() || !e.Time.Before(q.Since)) && (q.Until.IsZero() || e.Time.Before(q.Until))
}

// One listing reads at most auditScan entries; when it stops there it returns a token to go on.
const auditScan = 20000

// AuditLog lists entries that match q, a page at a time (at most 1,000, 100 by default).
func (s *Service) AuditLog(q AuditQuery) ([]AuditEntry, string, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = 100
	}
	if limit > 1000 {
		return nil, "", Errorf(CodeInvalidRequest, "maxResults %d: at most 1000", limit)
	}
	s.flushAudit() // what this replica was told before, it shows
	var out []AuditEntry
	next := ""
	err := s.st.View(func(t store.Tx) error {
		after, scanned := q.NextToken, 0
		for len(out) < limit && scanned < auditScan {
			names, bodies, err := t.RecordsPage(recordAudit, after, 500, !q.Oldest)
			if err != nil {
				return err
			}
			for i, raw := range bodies {
				scanned++
				after = names[i]
				var e AuditEntry
				if err := json.Unmarshal(raw, &e); err != nil {
					return fmt.Errorf("corrupt audit entry %s: %w", names[i], err)
				}
				if q.matches(&e) {
					out = append(out, e)
					if len(out) == limit {
						break
					}
				}
			}
			if len(names) < 500 && len(out) < limit {
				return nil // the end of the log
			}
		}
		next = after
		return nil
	})
	return out, next, err
}
