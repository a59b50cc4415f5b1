package localiot_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/localiot/rest"
	"github.com/otaflow/otaflow/internal/localiot/store"
	"github.com/otaflow/otaflow/internal/mqtttest"
)

func signedPut(t *testing.T, url string, body []byte, creds rest.Credentials) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, url, bytes.NewReader(body))
	require.NoError(t, err)
	sum := sha256.Sum256(body)
	req.Header.Set("X-Amz-Content-Sha256", hex.EncodeToString(sum[:])) // as the release store states it
	err = v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: creds.AccessKeyID, SecretAccessKey: creds.SecretAccessKey},
		req, hex.EncodeToString(sum[:]), "iot", "us-east-1", time.Now())
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	return resp
}

func TestPresignedArtifactURLs(t *testing.T) {
	svc, clock := openWithClock(t)
	srv := httptest.NewServer(rest.Handler(svc, &rest.SigV4Verifier{Creds: testCreds, Region: "us-east-1"}))
	defer srv.Close()
	svc.SetBaseURL(srv.URL)
	artifact := bytes.Repeat([]byte("otaflow"), 10000)

	resp := signedPut(t, srv.URL+"/artifacts/releases/core/1.11.6.tar.gz", artifact, rest.Credentials{AccessKeyID: "otaflow", SecretAccessKey: "wrong"})
	resp.Body.Close()
	require.Equal(t, http.StatusForbidden, resp.StatusCode, "uploads need a valid signature")
	resp = signedPut(t, srv.URL+"/artifacts/releases/core/../../escape", artifact, testCreds)
	resp.Body.Close()
	require.NotEqual(t, http.StatusOK, resp.StatusCode, "no path traversal")
	resp = signedPut(t, srv.URL+"/artifacts/releases/core/1.11.6.tar.gz", artifact, testCreds)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	b := mqtttest.Embedded(t)
	servePlane(t, svc, b.URL, "dev-1")
	dev := connectDevice(t, b, "dev-1")
	dev.subscribe("$aws/things/dev-1/jobs/#")
	_, err := svc.CreateJob(localiot.CreateJobInput{JobID: "j", Targets: []string{"dev-1"},
		Document: `{"url":"${aws:iot:s3-presigned-url:https://s3.amazonaws.com/releases/core/1.11.6.tar.gz}"}`,
		Presign:  &store.PresignConfig{RoleArn: "arn:aws:iam::1:role/signer", ExpiresInSec: 60}})
	require.NoError(t, err)
	dev.publish("start-next", map[string]any{"clientToken": "s"})
	doc := dev.await("start-next/accepted")["execution"].(map[string]any)["jobDocument"].(map[string]any)
	url := doc["url"].(string)
	require.True(t, strings.HasPrefix(url, srv.URL+"/artifacts/releases/core/1.11.6.tar.gz?"), url)

	get := func(u string, header ...string) (*http.Response, []byte) {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		if len(header) == 2 {
			req.Header.Set(header[0], header[1])
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, body
	}
	resp, body := get(url)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, artifact, body)
	resp, body = get(url, "Range", "bytes=7-13")
	require.Equal(t, http.StatusPartialContent, resp.StatusCode, "downloads can resume")
	require.Equal(t, "otaflow", string(body))

	resp, body = get(strings.Replace(url, "1.11.6.tar.gz", "1.11.7.tar.gz", 1))
	require.Equal(t, http.StatusForbidden, resp.StatusCode, "an altered URL is refused")
	require.Contains(t, string(body), "signature")
	clock.Advance(61 * time.Second)
	resp, body = get(url)
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Contains(t, string(body), "expired")
}
