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

// Audit records an entry durably (it returns once the entry is on disk).
func (s *Service) Audit(e AuditEntry) error {
	if e.Time.IsZero() {
		e.Time = s.Clock()
	}
	e.Detail = truncate(e.Detail, 1024)
	e.Reason = truncate(e.Reason, 1024)
	// Every replica records its own REST calls: on a shared store an entry is its own
	// transaction (a Batch there commits only on the replica that holds the leader's lease);
	// on bbolt concurrent entries share a commit.
	write := s.st.Batch
	if _, shared := s.raw.(store.Shared); shared {
		write = s.st.Update
	}
	err := write(func(t store.Tx) error {
		seq, err := t.NextID("record")
		if err != nil {
			return err
		}
		e.Seq = seq
		return putRecord(t, recordAudit, auditName(seq), e)
	})
	if err != nil {
		s.log.Error().Err(err).Str("who", e.Who).Str("action", e.Action).Msg("audit: could not record an action")
	}
	return err
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
