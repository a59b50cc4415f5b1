package localiot_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/iotclient"
	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/localiot/rest"
	"github.com/otaflow/otaflow/internal/mqtttest"
	"github.com/otaflow/otaflow/internal/pki"
	"github.com/otaflow/otaflow/internal/release"
	"github.com/otaflow/otaflow/internal/tuf"
)

// forgedAuth is an Authorization header that names the right access key (no secret: key IDs
// leak) with a signature that cannot verify: what the memory attack of issue #22 sent.
const forgedAuth = "AWS4-HMAC-SHA256 Credential=otaflow/20260101/us-east-1/iot/aws4_request, SignedHeaders=host;x-amz-date, Signature=00"

func rawRequest(t *testing.T, addr, head string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	_, err = io.WriteString(c, head)
	require.NoError(t, err)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestUnsignedBodiesAreNotReadIntoMemory is issue #22's pre-authentication memory attack: a
// 16 MiB body with a forged signature was read whole before the signature was checked. Now a
// declared body over 64 KiB is refused before a byte of it is read, all unsigned bodies share
// a 4 MiB pool (the 65th concurrent 64 KiB one is told to retry), and no error names the key.
func TestUnsignedBodiesAreNotReadIntoMemory(t *testing.T) {
	svc := openService(t, t.TempDir())
	defer svc.Close()
	addr := strings.TrimPrefix(serveAPI(t, svc), "http://")
	date := time.Now().UTC().Format("20060102T150405Z")
	forged := strings.Replace(forgedAuth, "20260101", date[:8], 1)
	head := func(length int) string {
		return fmt.Sprintf("PUT /jobs/j1 HTTP/1.1\r\nHost: %s\r\nX-Amz-Date: %s\r\nAuthorization: %s\r\nContent-Length: %d\r\n\r\n", addr, date, forged, length)
	}

	// 16 MiB declared, nothing sent: answered at once.
	code, body := rawRequest(t, addr, head(16<<20))
	require.Equal(t, http.StatusRequestEntityTooLarge, code, body)
	require.Contains(t, body, "x-amz-content-sha256")
	require.NotContains(t, body, "otaflow", "the error names no key")

	// Slow bodies hold the pool: 64 of 64 KiB fill it, the next is refused.
	var held []net.Conn
	for range 64 {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		held = append(held, c)
		_, err = io.WriteString(c, head(64<<10)+"{")
		require.NoError(t, err)
	}
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	time.Sleep(time.Second) // every held request is in the pool
	code, body = rawRequest(t, addr, head(64<<10))
	require.Equal(t, http.StatusTooManyRequests, code, body)
	require.Contains(t, body, "retry")

	// A request that names an unknown key or none is refused without naming the real one.
	for _, auth := range []string{"", strings.Replace(forged, "otaflow/", "someone/", 1)} {
		h := fmt.Sprintf("GET /things HTTP/1.1\r\nHost: %s\r\nX-Amz-Date: %s\r\n", addr, date)
		if auth != "" {
			h += "Authorization: " + auth + "\r\n"
		}
		code, body = rawRequest(t, addr, h+"\r\n")
		require.Equal(t, http.StatusForbidden, code)
		require.NotContains(t, body, "otaflow", "the error names no key: %s", body)
	}
}

// serveAPI serves svc's REST API on loopback with the production listener's limits.
func serveAPI(t *testing.T, svc *localiot.Service) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv, err := rest.NewServer(ln, rest.Handler(svc, &rest.SigV4Verifier{Creds: testCreds, Region: "us-east-1"}), rest.ServerOptions{})
	require.NoError(t, err)
	go srv.Serve()
	t.Cleanup(func() { srv.Close() })
	url := "http://" + ln.Addr().String()
	svc.SetBaseURL(url)
	return url
}

// TestSignedRequestsOverTLS: with a certificate the REST API is HTTPS; our client states the
// body's hash, so even a large signed body is checked before it is read; a request signed
// more than AWS's five minutes ago is refused.
func TestSignedRequestsOverTLS(t *testing.T) {
	ctx := context.Background()
	svc := openService(t, t.TempDir())
	defer svc.Close()
	dir := t.TempDir()
	ca, err := pki.Open(dir)
	require.NoError(t, err)
	certFile, keyFile, err := ca.IssueFiles(dir, "jobs", true, "127.0.0.1")
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv, err := rest.NewServer(ln, rest.Handler(svc, &rest.SigV4Verifier{Creds: testCreds, Region: "us-east-1"}), rest.ServerOptions{CertFile: certFile, KeyFile: keyFile})
	require.NoError(t, err)
	go srv.Serve()
	defer srv.Close()
	require.Equal(t, "https", srv.Scheme())
	url := "https://" + ln.Addr().String()

	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	c, err := iotclient.NewIoT(ctx, iotclient.Config{Endpoint: url, Region: "us-east-1", AccessKeyID: testCreds.AccessKeyID, SecretAccessKey: testCreds.SecretAccessKey, HTTP: hc})
	require.NoError(t, err)
	attrs := map[string]string{}
	for i := range 90 { // a body over the 64 KiB an unhashed body may have
		attrs[fmt.Sprintf("a%02d", i)] = strings.Repeat("x", 800)
	}
	_, err = c.CreateThing(ctx, &iot.CreateThingInput{ThingName: aws.String("big-1"), AttributePayload: &types.AttributePayload{Attributes: attrs}})
	// The body (72 KB) was read after its signature was checked, and the service's own rule
	// answers, not the pre-authentication bound.
	require.ErrorContains(t, err, "at most 50 attributes")
	_, err = c.CreateThing(ctx, &iot.CreateThingInput{ThingName: aws.String("dev-1")})
	require.NoError(t, err)
	_, err = c.DescribeThing(ctx, &iot.DescribeThingInput{ThingName: aws.String("dev-1")})
	require.NoError(t, err)

	resp, err := (&http.Client{}).Get(strings.Replace(url, "https", "http", 1) + "/healthz")
	if err == nil {
		resp.Body.Close()
		require.NotEqual(t, http.StatusOK, resp.StatusCode, "plain HTTP is not served beside TLS")
	}

	old := &rest.SigV4Verifier{Creds: testCreds, Region: "us-east-1", Now: func() time.Time { return time.Now().Add(6 * time.Minute) }}
	req, _ := http.NewRequest(http.MethodGet, "http://x/things", nil)
	req.Header.Set("X-Amz-Date", time.Now().UTC().Format("20060102T150405Z"))
	req.Header.Set("Authorization", strings.Replace(forgedAuth, "20260101", time.Now().UTC().Format("20060102"), 1))
	require.ErrorContains(t, old.Verify(req), "more than 5m0s from server time")
}

// TestReleaseMetadataIsWrittenOnlyByStarterRelease: the REST key alone can no longer
// overwrite tuf/*: the generic upload refuses the prefix, and the metadata endpoint takes
// only what verifies against the published root, never a different file at a published
// version (the re-signed targets.json of issue #22).
func TestReleaseMetadataIsWrittenOnlyByStarterRelease(t *testing.T) {
	ctx := context.Background()
	svc := openService(t, t.TempDir())
	defer svc.Close()
	url := serveAPI(t, svc)
	store := release.Store{Endpoint: url, Region: "us-east-1", AccessKeyID: testCreds.AccessKeyID, SecretAccessKey: testCreds.SecretAccessKey}
	repo, err := tuf.Init(filepath.Join(t.TempDir(), "repo"), tuf.Options{})
	require.NoError(t, err)
	pkg := filepath.Join(t.TempDir(), "core.tar.gz")
	require.NoError(t, os.WriteFile(pkg, []byte("core"), 0o644))
	_, err = release.Publish(ctx, repo, &store, "b", pkg, tuf.Custom{Software: "core", Version: "2.0.0", OS: "ubuntu", Architecture: "x86_64",
		HealthCheck: &tuf.HealthCheck{Command: []string{"true"}}})
	require.NoError(t, err)
	require.NoError(t, store.PutMetadata(ctx, repo, "b"), "a retried publish is fine")

	err = store.PutBytes(ctx, "b", "tuf/targets.json", []byte(`{}`))
	require.ErrorContains(t, err, "written only by `starter release`")

	// Re-signed at the same version with the targets key: refused.
	files, err := repo.Files()
	require.NoError(t, err)
	var doc map[string]any
	require.NoError(t, json.Unmarshal(files["targets.json"], &doc))
	forged := strings.Replace(string(files["targets.json"]), `"true"`, `"id"`, 1)
	status, body := putTUF(t, url, "b", "targets.json", forged)
	require.Equal(t, http.StatusBadRequest, status)
	require.Contains(t, body, "already published with other content")
	// A newer version signed by no key of the root: refused.
	forged = strings.Replace(forged, fmt.Sprintf(`"version": %v`, doc["signed"].(map[string]any)["version"]), `"version": 99`, 1)
	status, body = putTUF(t, url, "b", "targets.json", forged)
	require.Equal(t, http.StatusBadRequest, status)
	require.Contains(t, body, "not signed by the targets keys")
	// A root not signed by the published root's keys.
	other, err := tuf.Init(filepath.Join(t.TempDir(), "other"), tuf.Options{})
	require.NoError(t, err)
	require.NoError(t, other.Rotate(tuf.RoleRoot))
	ofiles, _ := other.Files()
	status, body = putTUF(t, url, "b", "2.root.json", string(ofiles["2.root.json"]))
	require.Equal(t, http.StatusBadRequest, status)
	require.Contains(t, body, "not signed by the root keys of version 1")

	// The real rotation goes through.
	require.NoError(t, repo.Rotate(tuf.RoleTargets, tuf.RoleSnapshot, tuf.RoleTimestamp))
	require.NoError(t, store.PutMetadata(ctx, repo, "b"))
	resp, err := http.Get(url + "/tuf/b/2.root.json")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

func putTUF(t *testing.T, url, bucket, file, body string) (int, string) {
	t.Helper()
	resp := signedPut(t, url+"/tuf/"+bucket+"/"+file, []byte(body), testCreds)
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

// TestShadowsFollowAWSLimits is issue #22's growing shadow: desired grew to 9.4 MB inside the
// thing record. Now the stored document (desired and reported together) stays within 8 KB,
// a thing has a bounded number of named shadows, and shadows live apart from the thing, so a
// shadow write never rewrites it.
func TestShadowsFollowAWSLimits(t *testing.T) {
	svc := openService(t, t.TempDir())
	defer svc.Close()
	_, err := svc.CreateThing("dev-1", nil)
	require.NoError(t, err)
	chunk := strings.Repeat("x", 1000)
	var limited error
	for i := range 20 {
		_, limited = svc.UpdateShadow("dev-1", "otaflow", []byte(fmt.Sprintf(`{"state":{"desired":{"k%02d":%q}}}`, i, chunk)))
		if limited != nil {
			require.Less(t, i, 9, "desired grew past 8 KB")
			break
		}
	}
	require.ErrorContains(t, limited, "larger than 8192 (desired and reported together)")
	_, err = svc.UpdateShadow("dev-1", "otaflow", []byte(fmt.Sprintf(`{"state":{"reported":{"r":%q}}}`, chunk)))
	require.ErrorContains(t, err, "larger than 8192", "reported counts with desired")
	_, err = svc.UpdateShadow("dev-1", "otaflow", []byte(`{"state":{"desired":{"k00":null,"k01":null}}}`))
	require.NoError(t, err, "removing keys is always allowed")

	th, err := svc.DescribeThing("dev-1")
	require.NoError(t, err)
	require.Empty(t, th.Shadows, "shadows are stored apart from the thing record")
	require.EqualValues(t, 1, th.Version, "shadow writes do not touch the thing")

	for i := 1; i < localiot.MaxNamedShadows; i++ {
		_, err := svc.UpdateShadow("dev-1", fmt.Sprintf("s%d", i), []byte(`{"state":{"reported":{"a":1}}}`))
		require.NoError(t, err)
	}
	_, err = svc.UpdateShadow("dev-1", "one-too-many", []byte(`{"state":{"reported":{"a":1}}}`))
	require.ErrorContains(t, err, "already has 10 named shadows")
	_, err = svc.UpdateShadow("dev-1", "s1", []byte(`{"state":{"reported":{"a":2}}}`))
	require.NoError(t, err, "an existing shadow still takes updates")

	require.NoError(t, svc.DeleteThing("dev-1", 0))
	_, err = svc.CreateThing("dev-1", nil)
	require.NoError(t, err)
	_, err = svc.GetShadow("dev-1", "otaflow")
	require.ErrorContains(t, err, "No shadow exists", "a thing's shadows go with it")
}

// TestDeviceShadowNamesFollowThePolicy: on the embedded broker a device may use its classic
// shadow and only the named shadows the policy allows (the inventory), not create others.
func TestDeviceShadowNamesFollowThePolicy(t *testing.T) {
	b := mqtttest.Embedded(t)
	svc := openService(t, t.TempDir())
	defer svc.Close()
	servePlane(t, svc, b.URL, "dev-1")
	dev := connectDevice(t, b, "dev-1")
	require.EqualValues(t, 0x80, dev.subscribe("$aws/things/dev-1/shadow/name/junk/update/accepted"))
	require.EqualValues(t, 1, dev.subscribe("$aws/things/dev-1/shadow/update/accepted"), "its classic shadow")
	require.EqualValues(t, 1, dev.subscribe("$aws/things/dev-1/shadow/name/otaflow/update/accepted"))
	dev.client.Publish("$aws/things/dev-1/shadow/name/otaflow/update", 1, false, []byte(`{"state":{"reported":{"a":1}}}`)).WaitTimeout(5 * time.Second)
	dev.awaitTopic("$aws/things/dev-1/shadow/name/otaflow/update/accepted")
	dev.client.Publish("$aws/things/dev-1/shadow/name/junk/update", 1, false, []byte(`{"state":{"reported":{"a":1}}}`)).WaitTimeout(5 * time.Second)
	time.Sleep(300 * time.Millisecond)
	_, err := svc.GetShadow("dev-1", "junk")
	require.ErrorContains(t, err, "No shadow exists")
}

// TestInProcessClient: the console's way to the service (jobs-service) is signed and checked
// like any other client's.
func TestInProcessClient(t *testing.T) {
	ctx := context.Background()
	svc := openService(t, t.TempDir())
	defer svc.Close()
	h := rest.Handler(svc, &rest.SigV4Verifier{Creds: testCreds, Region: "us-east-1"})
	c, err := iotclient.NewIoT(ctx, iotclient.Config{Endpoint: "http://jobs-service.in-process", Region: "us-east-1",
		AccessKeyID: testCreds.AccessKeyID, SecretAccessKey: testCreds.SecretAccessKey, HTTP: rest.InProcessClient(h)})
	require.NoError(t, err)
	_, err = c.CreateThing(ctx, &iot.CreateThingInput{ThingName: aws.String("dev-1")})
	require.NoError(t, err)
	bad, err := iotclient.NewIoT(ctx, iotclient.Config{Endpoint: "http://jobs-service.in-process", Region: "us-east-1",
		AccessKeyID: testCreds.AccessKeyID, SecretAccessKey: "wrong", HTTP: rest.InProcessClient(h)})
	require.NoError(t, err)
	_, err = bad.DescribeThing(ctx, &iot.DescribeThingInput{ThingName: aws.String("dev-1")})
	require.ErrorContains(t, err, "signature does not match")
}
