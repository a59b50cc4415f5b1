package contract

import (
	"fmt"
	"net/url"
	"time"
)

// Webhooks: a rollout tells the URLs in RolloutRequest.Webhooks what happens to it, each event
// in an HTTP POST signed with the worker's secret (HMAC-SHA256). Each event is delivered by a
// workflow of its own (WorkflowWebhook), which outlives the rollout and retries a receiver that
// is down for up to WebhookRetryFor, so a rollout never waits for a receiver.

// WorkflowWebhook delivers one event; ActivityDeliverWebhook posts it to one URL.
const (
	WorkflowWebhook        = "DeliverWebhook"
	ActivityDeliverWebhook = "DeliverWebhook"
)

// WebhookRetryFor is how long an event is retried to a receiver that does not take it.
const WebhookRetryFor = 24 * time.Hour

// MaxWebhooks bounds the URLs one rollout notifies.
const MaxWebhooks = 5

// Webhook events.
const (
	EventStarted          = "rollout.started"
	EventWavePassed       = "rollout.wave_passed"
	EventAwaitingApproval = "rollout.awaiting_approval"
	EventHealthBreached   = "rollout.health_gate_breached"
	EventRollingBack      = "rollout.rolling_back"
	EventRolledBack       = "rollout.rolled_back"
	EventSucceeded        = "rollout.succeeded"
	EventFailed           = "rollout.failed"
	EventAborted          = "rollout.aborted"
	EventCanceled         = "rollout.canceled"
	EventTimedOut         = "rollout.timed_out"
)

// Webhook headers: the event, a delivery ID (the same on every retry, so a receiver can drop
// a repeat), the time it was signed at (Unix seconds) and the signature,
// "sha256=" + hex(HMAC-SHA256(secret, timestamp + "." + body)).
const (
	HeaderWebhookEvent     = "X-Otaflow-Event"
	HeaderWebhookDelivery  = "X-Otaflow-Delivery"
	HeaderWebhookTimestamp = "X-Otaflow-Timestamp"
	HeaderWebhookSignature = "X-Otaflow-Signature"
)

// WebhookEvent is the body of a webhook.
type WebhookEvent struct {
	ID        string    `json:"id"`
	Event     string    `json:"event"`
	Time      time.Time `json:"time"`
	RolloutID string    `json:"rolloutId"`
	Software  string    `json:"software"`
	Version   string    `json:"version"`
	State     string    `json:"state"`
	Message   string    `json:"message"`
	// Wave is the wave the event is about (0: the rollout as a whole).
	Wave    int    `json:"wave,omitempty"`
	Waves   int    `json:"waves"`
	Devices int    `json:"devices"`
	Counts  Counts `json:"counts"`
	// Rollback is set once a rollback ended.
	Rollback *RollbackResult `json:"rollback,omitempty"`
}

// WebhookRequest is WorkflowWebhook's input: one event for every URL.
type WebhookRequest struct {
	URLs  []string     `json:"urls"`
	Event WebhookEvent `json:"event"`
}

// WebhookDelivery is ActivityDeliverWebhook's input: one event for one URL.
type WebhookDelivery struct {
	URL   string       `json:"url"`
	Event WebhookEvent `json:"event"`
}

// checkWebhooks reports what is wrong with a rollout's webhook URLs.
func checkWebhooks(urls []string) []string {
	var problems []string
	if len(urls) > MaxWebhooks {
		problems = append(problems, fmt.Sprintf("%d webhooks: a rollout notifies at most %d URLs", len(urls), MaxWebhooks))
	}
	for _, u := range urls {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" {
			problems = append(problems, fmt.Sprintf("webhook %q is not an http(s) URL", u))
		}
	}
	return problems
}
