// Package accessclient is the client of otaflow's own REST operations beside AWS IoT's: access
// keys with roles (/access-keys), who a key is (/whoami) and the audit log (/audit). Requests
// are signed with SigV4 like every other call to the jobs service.
package accessclient

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/otaflow/otaflow/internal/iotclient"
	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/workflows/contract"
)

// Client talks to one jobs service.
type Client struct {
	endpoint string
	region   string
	creds    aws.CredentialsProvider
	http     aws.HTTPClient
	// Reason is sent with every change, for the audit log.
	Reason string
}

// New is a client for cfg (an endpoint is required: AWS has no such operations).
func New(ctx context.Context, cfg iotclient.Config) (*Client, error) {
	if cfg.Endpoint == "" {
		return nil, fmt.Errorf("access keys and the audit log are otaflow's jobs service's: give its --endpoint (AWS keeps these in IAM and CloudTrail)")
	}
	ac, err := iotclient.AWSConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &Client{endpoint: strings.TrimRight(cfg.Endpoint, "/"), region: ac.Region, creds: ac.Credentials, http: ac.HTTPClient}, nil
}

// APIError is the service's refusal: the exception AWS would name and why.
type APIError struct {
	Code    string
	Message string
}

func (e *APIError) Error() string { return e.Code + ": " + e.Message }

func (c *Client) do(ctx context.Context, method, path string, query url.Values, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return err
		}
	}
	u := c.endpoint + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Reason != "" && method != http.MethodGet {
		req.Header.Set("X-Otaflow-Reason", c.Reason)
	}
	sum := sha256.Sum256(body)
	hash := hex.EncodeToString(sum[:])
	req.Header.Set("X-Amz-Content-Sha256", hash)
	creds, err := c.creds.Retrieve(ctx)
	if err != nil {
		return fmt.Errorf("credentials: %w", err)
	}
	if err := v4.NewSigner().SignHTTP(ctx, creds, req, hash, "iot", c.region, time.Now()); err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var msg struct {
			Message string `json:"message"`
		}
		json.Unmarshal(raw, &msg)
		return &APIError{Code: resp.Header.Get("X-Amzn-Errortype"), Message: msg.Message}
	}
	if out == nil || len(raw) == 0 {
		return nil
	}
	return json.Unmarshal(raw, out)
}

// Key is an access key as the service shows it; Secret only when it is new.
type Key struct {
	ID          string   `json:"accessKeyId"`
	Secret      string   `json:"secretAccessKey,omitempty"`
	Role        string   `json:"role"`
	ThingGroups []string `json:"thingGroups,omitempty"`
	Description string   `json:"description,omitempty"`
	Status      string   `json:"status"`
	CreatedAt   float64  `json:"createDate"`
	CreatedBy   string   `json:"createdBy,omitempty"`
	ExpiresAt   float64  `json:"expiresAt,omitempty"`
	ReplacedBy  string   `json:"replacedBy,omitempty"`
}

// Created is when the key was made.
func (k Key) Created() time.Time { return epoch(k.CreatedAt) }

// Expires is when a rotated key stops signing (zero: never).
func (k Key) Expires() time.Time { return epoch(k.ExpiresAt) }

func epoch(s float64) time.Time {
	if s == 0 {
		return time.Time{}
	}
	return time.UnixMilli(int64(s * 1000)).UTC()
}

// CreateKey issues a key for a role, optionally limited to thing groups.
func (c *Client) CreateKey(ctx context.Context, role string, groups []string, description string) (*Key, error) {
	var k Key
	err := c.do(ctx, http.MethodPost, "/access-keys", nil, map[string]any{"role": role, "thingGroups": groups, "description": description}, &k)
	return &k, err
}

// ListKeys lists every key (without secrets).
func (c *Client) ListKeys(ctx context.Context) ([]Key, error) {
	var out struct {
		Keys []Key `json:"accessKeys"`
	}
	err := c.do(ctx, http.MethodGet, "/access-keys", nil, nil, &out)
	return out.Keys, err
}

// SetStatus makes a key Active or Inactive.
func (c *Client) SetStatus(ctx context.Context, id, status string) (*Key, error) {
	var k Key
	err := c.do(ctx, http.MethodPatch, "/access-keys/"+url.PathEscape(id), nil, map[string]string{"status": status}, &k)
	return &k, err
}

// RotateKey issues a key like id; id signs for grace more.
func (c *Client) RotateKey(ctx context.Context, id string, grace time.Duration) (*Key, error) {
	var k Key
	err := c.do(ctx, http.MethodPost, "/access-keys/"+url.PathEscape(id)+"/rotate", nil, map[string]int64{"graceSeconds": int64(grace / time.Second)}, &k)
	return &k, err
}

// DeleteKey deletes a key.
func (c *Client) DeleteKey(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/access-keys/"+url.PathEscape(id), nil, nil, nil)
}

// Identity is who a key is.
type Identity struct {
	Name        string   `json:"name"`
	Role        string   `json:"role"`
	ThingGroups []string `json:"thingGroups"`
	Permissions []string `json:"permissions"`
}

// WhoAmI is who the client's key is and what it may do.
func (c *Client) WhoAmI(ctx context.Context) (*Identity, error) {
	var id Identity
	err := c.do(ctx, http.MethodGet, "/whoami", nil, nil, &id)
	return &id, err
}

// Audit is one page of the audit log and the token of the next ("" at the end).
func (c *Client) Audit(ctx context.Context, q localiot.AuditQuery) ([]localiot.AuditEntry, string, error) {
	v := url.Values{}
	for k, s := range map[string]string{"who": q.Who, "action": q.Action, "resource": q.Resource, "outcome": q.Outcome, "via": q.Via, "nextToken": q.NextToken} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339))
	}
	if !q.Until.IsZero() {
		v.Set("until", q.Until.UTC().Format(time.RFC3339))
	}
	if q.Oldest {
		v.Set("order", "oldest")
	}
	if q.Limit > 0 {
		v.Set("maxResults", fmt.Sprint(q.Limit))
	}
	var out struct {
		Entries   []localiot.AuditEntry `json:"entries"`
		NextToken string                `json:"nextToken"`
	}
	err := c.do(ctx, http.MethodGet, "/audit", v, nil, &out)
	return out.Entries, out.NextToken, err
}

// User is a console user as the service shows it.
type User struct {
	Name            string   `json:"userName"`
	Role            string   `json:"role"`
	ThingGroups     []string `json:"thingGroups,omitempty"`
	Disabled        bool     `json:"disabled,omitempty"`
	CreatedAt       float64  `json:"createDate"`
	CreatedBy       string   `json:"createdBy,omitempty"`
	PasswordChanged float64  `json:"passwordChanged"`
}

// UserChange is a new user or a change to one (empty fields: unchanged).
type UserChange struct {
	Password    string   `json:"password,omitempty"`
	Role        string   `json:"role,omitempty"`
	ThingGroups []string `json:"thingGroups,omitempty"`
	Disabled    *bool    `json:"disabled,omitempty"`
}

// CreateUser adds a console user.
func (c *Client) CreateUser(ctx context.Context, name string, u UserChange) (*User, error) {
	var out User
	err := c.do(ctx, http.MethodPost, "/users/"+url.PathEscape(name), nil, u, &out)
	return &out, err
}

// UpdateUser changes a console user.
func (c *Client) UpdateUser(ctx context.Context, name string, u UserChange) (*User, error) {
	var out User
	err := c.do(ctx, http.MethodPatch, "/users/"+url.PathEscape(name), nil, u, &out)
	return &out, err
}

// ListUsers lists the console users.
func (c *Client) ListUsers(ctx context.Context) ([]User, error) {
	var out struct {
		Users []User `json:"users"`
	}
	err := c.do(ctx, http.MethodGet, "/users", nil, nil, &out)
	return out.Users, err
}

// DeleteUser removes a console user.
func (c *Client) DeleteUser(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/users/"+url.PathEscape(name), nil, nil, nil)
}

// Started is a rollout the jobs service started, and who it says started it.
type Started struct {
	RolloutID  string `json:"rolloutId"`
	WorkflowID string `json:"workflowId"`
	RunID      string `json:"runId"`
	StartedBy  string `json:"startedBy"`
}

// StartRollout starts a rollout through the jobs service (which names the key as its starter).
func (c *Client) StartRollout(ctx context.Context, req contract.RolloutRequest) (*Started, error) {
	var out Started
	err := c.do(ctx, http.MethodPost, "/rollouts", nil, req, &out)
	return &out, err
}

// Steer pauses, resumes, approves, cancels (cancel-rollback, cancel-no-rollback), rolls back
// or overrides a rollout's health gate through the jobs service, as the client's key.
func (c *Client) Steer(ctx context.Context, rolloutID, action, reason string) (rolloutclient.Steered, error) {
	var out rolloutclient.Steered
	cc := *c
	cc.Reason = reason // for the audit log, as the body's is for the rollout
	err := cc.do(ctx, http.MethodPost, "/rollouts/"+url.PathEscape(rolloutID)+"/"+url.PathEscape(action), nil, map[string]string{"reason": reason}, &out)
	return out, err
}
