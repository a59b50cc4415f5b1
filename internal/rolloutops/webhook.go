package rolloutops

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/otaflow/otaflow/workflows/contract"
)

// DeliverWebhook posts one rollout event to one URL, signed with the worker's secret. A
// receiver that does not answer 2xx gets it again (the workflow retries for
// contract.WebhookRetryFor); without a secret nothing is sent.
func (a *Ops) DeliverWebhook(ctx context.Context, in contract.WebhookDelivery) error {
	if len(a.WebhookSecret) == 0 {
		return invalidErr("this worker has no webhook secret (worker --webhook-secret, OTAFLOW_WEBHOOK_SECRET): webhooks are signed, never sent unsigned", nil)
	}
	body, err := json.Marshal(in.Event)
	if err != nil {
		return err
	}
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, in.URL, bytes.NewReader(body))
	if err != nil {
		return invalidErr(fmt.Sprintf("webhook %s: %v", in.URL, err), nil)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "otaflow-webhook")
	req.Header.Set(contract.HeaderWebhookEvent, in.Event.Event)
	req.Header.Set(contract.HeaderWebhookDelivery, in.Event.ID)
	req.Header.Set(contract.HeaderWebhookTimestamp, ts)
	req.Header.Set(contract.HeaderWebhookSignature, SignWebhook(a.WebhookSecret, ts, body))
	client := a.WebhookClient
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("webhook %s: %w", in.URL, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook %s answered %s; it will be sent again", in.URL, resp.Status)
	}
	return nil
}

// SignWebhook is a webhook's signature: "sha256=" + hex(HMAC-SHA256(secret, ts + "." + body)).
func SignWebhook(secret []byte, ts string, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// VerifyWebhook checks a received webhook: its signature over its timestamp and body, and
// that it was signed at most maxAge ago (a replayed old delivery is refused).
func VerifyWebhook(secret []byte, h http.Header, body []byte, maxAge time.Duration, now time.Time) error {
	ts := h.Get(contract.HeaderWebhookTimestamp)
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errors.New("no valid " + contract.HeaderWebhookTimestamp)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > maxAge || d < -maxAge {
		return fmt.Errorf("signed %s ago: older than %s", d.Round(time.Second), maxAge)
	}
	if !hmac.Equal([]byte(SignWebhook(secret, ts, body)), []byte(h.Get(contract.HeaderWebhookSignature))) {
		return errors.New("the signature does not match")
	}
	return nil
}
