package console

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// ShadowReader reads named device shadows through the Device Shadow service's REST API (the
// iot-data plane's GetThingShadow: GET /things/THING/shadow?name=NAME, signed with SigV4 for
// "iotdata"), from AWS's data endpoint or the local jobs service. The SDK's iotdataplane
// module is not served by the module proxy this project builds from, so this one call is made
// with the SDK's own signer.
type ShadowReader struct {
	// Endpoint is the data endpoint URL (https://xxxx-ats.iot.REGION.amazonaws.com, or the
	// local jobs service's URL).
	Endpoint    string
	Region      string
	Credentials aws.CredentialsProvider
	HTTP        *http.Client
}

// Shadow is the part of a GetThingShadow answer the console reads.
type Shadow struct {
	State struct {
		Reported map[string]any `json:"reported"`
	} `json:"state"`
	Version   int64 `json:"version"`
	Timestamp int64 `json:"timestamp"`
}

// ErrNoShadow is returned when the thing has no such shadow (a device whose agent never
// reported).
var ErrNoShadow = fmt.Errorf("no shadow")

// Get reads a thing's named shadow.
func (r *ShadowReader) Get(ctx context.Context, thing, name string) (*Shadow, error) {
	u := r.Endpoint + "/things/" + url.PathEscape(thing) + "/shadow?name=" + url.QueryEscape(name)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	creds, err := r.Credentials.Retrieve(ctx)
	if err != nil {
		return nil, fmt.Errorf("credentials for the shadow service: %w", err)
	}
	empty := sha256.Sum256(nil)
	if err := v4.NewSigner().SignHTTP(ctx, creds, req, hex.EncodeToString(empty[:]), "iotdata", r.Region, time.Now()); err != nil {
		return nil, err
	}
	hc := r.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 15 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("read shadow %s of %s: %w", name, thing, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode == http.StatusNotFound {
		return nil, ErrNoShadow
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("read shadow %s of %s: %s: %s", name, thing, resp.Status, body)
	}
	var sh Shadow
	if err := json.Unmarshal(body, &sh); err != nil {
		return nil, fmt.Errorf("read shadow %s of %s: %w", name, thing, err)
	}
	return &sh, nil
}
