package rest

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/otaflow/otaflow/internal/localiot"
)

// Credentials are the one access key the local jobs service accepts.
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey string
}

// KeyStore knows the access keys besides the configured one (localiot.Service keeps them).
type KeyStore interface {
	// AccessKeySecret is a key's secret and principal; ok is false for an unknown key.
	AccessKeySecret(id string) (secret string, p localiot.Principal, ok bool, err error)
}

// SigV4Verifier checks AWS Signature Version 4 on every request, the way AWS IoT does, so
// the same clients that talk to AWS talk to us, and nothing unsigned gets through. Creds is
// the configured key, an admin's; Keys are the keys admins create (Handler sets the service's).
type SigV4Verifier struct {
	Creds Credentials
	Keys  KeyStore
	// Refused hears of every request refused as unauthenticated (the audit log's).
	Refused func(r *http.Request, why string)
	Region  string
	Service string // "iot"; greengrass requests are signed for "greengrass"
	Now     func() time.Time
	// MaxSkew is how far the request time may be from ours: AWS's replay window, five
	// minutes by default ("a request must reach AWS within five minutes of the time stamp in
	// the request").
	MaxSkew time.Duration

	poolOnce sync.Once
	pool     *semaphore.Weighted
}

// Before its signature is checked, a request's body is either not read at all (the client
// states its hash in x-amz-content-sha256, as otaflow's clients and S3 uploads do: the
// signature is checked first, the body as it streams) or, for clients that do not (the AWS
// CLI), read whole into a pool shared by every unauthenticated request: at most
// maxUnhashedBody per request (AWS IoT's largest request, a job document of 32 KB, fits) and
// preAuthPool in all. A request that finds the pool full is told to retry.
const (
	maxUnhashedBody = 64 << 10
	preAuthPool     = 4 << 20
	bodyReadTimeout = 30 * time.Second
)

// errThrottled is a request refused because the pre-authentication pool is full.
var errThrottled = errors.New("too many unsigned request bodies are being read; retry shortly")

// Middleware rejects any request whose signature does not verify.
func (v *SigV4Verifier) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Until it is authenticated, a request gets bodyReadTimeout to deliver its body; an
		// authenticated one (an artifact upload) may take as long as it needs.
		rc := http.NewResponseController(w)
		rc.SetReadDeadline(time.Now().Add(bodyReadTimeout))
		p, err := v.verify(r)
		if err != nil {
			name, status := "UnrecognizedClientException", http.StatusForbidden
			switch {
			case errors.Is(err, errThrottled):
				name, status = "ThrottlingException", http.StatusTooManyRequests
			case errors.Is(err, errTooLarge):
				name, status = "InvalidRequestException", http.StatusRequestEntityTooLarge
			case strings.Contains(err.Error(), "signature does not match"):
				name = "InvalidSignatureException"
			}
			w.Header().Set("X-Amzn-Errortype", name)
			w.Header().Set("Content-Type", "application/json")
			if status != http.StatusForbidden {
				w.Header().Set("Connection", "close") // the unread body is not drained
			}
			w.WriteHeader(status)
			fmt.Fprintf(w, "{\"message\":%q}\n", err.Error())
			if status == http.StatusForbidden && v.Refused != nil {
				v.Refused(r, err.Error())
			}
			return
		}
		rc.SetReadDeadline(time.Time{})
		next.ServeHTTP(w, r.WithContext(localiot.WithPrincipal(r.Context(), p)))
	})
}

const algo = "AWS4-HMAC-SHA256"

// errTooLarge is an unsigned-hash body over maxUnhashedBody.
var errTooLarge = fmt.Errorf("request body is larger than %d bytes without x-amz-content-sha256: send the body's SHA-256 in that (signed) header", maxUnhashedBody)

// Verify checks r's Authorization header: everything but the body first, then the body
// (see maxUnhashedBody). It restores the body for the handler. Its errors name no key.
func (v *SigV4Verifier) Verify(r *http.Request) error {
	_, err := v.verify(r)
	return err
}

// secretFor is a key's secret and who signing with it makes a request come from.
func (v *SigV4Verifier) secretFor(id string) (localiot.Principal, string, error) {
	if hmac.Equal([]byte(id), []byte(v.Creds.AccessKeyID)) {
		return localiot.Principal{Name: id, Role: localiot.RoleAdmin}, v.Creds.SecretAccessKey, nil
	}
	if v.Keys != nil && id != "" {
		secret, p, ok, err := v.Keys.AccessKeySecret(id)
		var refused localiot.ErrKeyRefused
		switch {
		case errors.As(err, &refused):
			return p, "", err
		case err != nil:
			return p, "", fmt.Errorf("could not look the access key up: %w", err)
		case ok:
			return p, secret, nil
		}
	}
	return localiot.Principal{}, "", fmt.Errorf("the security token included in the request is invalid")
}

func (v *SigV4Verifier) verify(r *http.Request) (localiot.Principal, error) {
	var p localiot.Principal
	authz := r.Header.Get("Authorization")
	if authz == "" {
		return p, fmt.Errorf("request is not signed: sign it with AWS Signature Version 4 using the jobs service's access key")
	}
	if !strings.HasPrefix(authz, algo+" ") {
		return p, fmt.Errorf("authorization uses an unsupported algorithm; use %s", algo)
	}
	fields := map[string]string{}
	for _, part := range strings.Split(strings.TrimPrefix(authz, algo+" "), ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if ok {
			fields[k] = val
		}
	}
	scope := strings.Split(fields["Credential"], "/")
	if len(scope) != 5 || scope[4] != "aws4_request" {
		return p, fmt.Errorf("authorization header has a malformed Credential")
	}
	p, secret, err := v.secretFor(scope[0])
	if err != nil {
		return p, err
	}
	if scope[2] != v.Region {
		return p, fmt.Errorf("credential should be scoped to a valid region %q, not %q", v.Region, scope[2])
	}
	amzDate := r.Header.Get("X-Amz-Date")
	t, err := time.Parse("20060102T150405Z", amzDate)
	if err != nil {
		return p, fmt.Errorf("request has no valid X-Amz-Date header")
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	skew := v.MaxSkew
	if skew == 0 {
		skew = 5 * time.Minute
	}
	if d := now().Sub(t); d > skew || d < -skew {
		return p, fmt.Errorf("signature expired: request time %s is more than %s from server time; check the client's clock", amzDate, skew)
	}
	if scope[1] != t.Format("20060102") {
		return p, fmt.Errorf("credential date %s does not match X-Amz-Date %s", scope[1], amzDate)
	}

	signed := strings.Split(fields["SignedHeaders"], ";")
	if !contains(signed, "host") {
		return p, fmt.Errorf("the host header must be signed")
	}
	if h := strings.ToLower(r.Header.Get("X-Amz-Content-Sha256")); len(h) == 64 && isHex(h) {
		// The client states the body's hash (as S3 uploads do): the signature covers the
		// claim and is checked before a byte of the body is read; the body is checked against
		// it as it streams, so artifacts of any size are never held in memory, and a body that
		// does not match fails the read.
		if err := v.checkSignature(r, secret, fields, scope, amzDate, signed, h); err != nil {
			return p, err
		}
		r.Body = &hashCheckingBody{r: r.Body, h: sha256.New(), want: h}
		return p, nil
	}
	body, err := v.readUnhashed(r)
	if err != nil {
		return p, err
	}
	sum := sha256.Sum256(body)
	payloadHash := hex.EncodeToString(sum[:])
	if h := strings.ToLower(r.Header.Get("X-Amz-Content-Sha256")); h != "" && h != "unsigned-payload" && h != payloadHash {
		return p, fmt.Errorf("x-amz-content-sha256 does not match the request body")
	}
	return p, v.checkSignature(r, secret, fields, scope, amzDate, signed, payloadHash)
}

// readUnhashed reads a body whose hash the client did not state, within the pre-auth pool
// and a read deadline, and restores it for the handler.
func (v *SigV4Verifier) readUnhashed(r *http.Request) ([]byte, error) {
	if r.ContentLength > maxUnhashedBody {
		return nil, errTooLarge
	}
	if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
		r.Body = http.NoBody
		return nil, nil
	}
	want := int64(maxUnhashedBody)
	if r.ContentLength > 0 {
		want = r.ContentLength
	}
	v.poolOnce.Do(func() { v.pool = semaphore.NewWeighted(preAuthPool) })
	if !v.pool.TryAcquire(want) {
		return nil, errThrottled
	}
	defer v.pool.Release(want)
	body, err := io.ReadAll(io.LimitReader(r.Body, want+1))
	if err != nil {
		return nil, fmt.Errorf("read request body: %w", err)
	}
	if int64(len(body)) > want {
		return nil, errTooLarge
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	return body, nil
}

// checkSignature compares the request's signature with the one the secret makes.
func (v *SigV4Verifier) checkSignature(r *http.Request, secret string, fields map[string]string, scope []string, amzDate string, signed []string, payloadHash string) error {
	var canon strings.Builder
	for _, h := range signed {
		var val string
		switch h {
		case "host":
			val = r.Host
		case "content-length":
			val = fmt.Sprint(r.ContentLength)
		default:
			vals := r.Header.Values(h)
			for i, x := range vals {
				vals[i] = strings.Join(strings.Fields(x), " ")
			}
			val = strings.Join(vals, ",")
		}
		canon.WriteString(h + ":" + val + "\n")
	}
	creq := strings.Join([]string{
		r.Method,
		awsEscape(r.URL.EscapedPath(), false),
		canonicalQuery(r.URL.RawQuery),
		canon.String(),
		fields["SignedHeaders"],
		payloadHash,
	}, "\n")
	credScope := strings.Join(scope[1:], "/")
	creqSum := sha256.Sum256([]byte(creq))
	toSign := strings.Join([]string{algo, amzDate, credScope, hex.EncodeToString(creqSum[:])}, "\n")
	key := hmacSHA256([]byte("AWS4"+secret), scope[1])
	key = hmacSHA256(key, scope[2])
	key = hmacSHA256(key, scope[3])
	key = hmacSHA256(key, "aws4_request")
	want := hex.EncodeToString(hmacSHA256(key, toSign))
	if !hmac.Equal([]byte(want), []byte(fields["Signature"])) {
		return fmt.Errorf("the request signature does not match: check the secret access key and signing method")
	}
	return nil
}

func hmacSHA256(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// awsEscape is SigV4's URI encoding: everything but unreserved characters (and '/', in paths).
func awsEscape(s string, encodeSlash bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_', c == '.', c == '~':
			b.WriteByte(c)
		case c == '/' && !encodeSlash:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func canonicalQuery(raw string) string {
	q, _ := url.ParseQuery(raw)
	var pairs []string
	for k, vs := range q {
		for _, v := range vs {
			pairs = append(pairs, awsEscape(k, true)+"="+awsEscape(v, true))
		}
	}
	sort.Strings(pairs)
	return strings.Join(pairs, "&")
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

// hashCheckingBody passes a request body through and fails at its end if it does not hash to
// the signed x-amz-content-sha256.
type hashCheckingBody struct {
	r    io.ReadCloser
	h    hash.Hash
	want string
}

func (b *hashCheckingBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.h.Write(p[:n])
	if err == io.EOF && hex.EncodeToString(b.h.Sum(nil)) != b.want {
		return n, fmt.Errorf("request body does not match x-amz-content-sha256")
	}
	return n, err
}

func (b *hashCheckingBody) Close() error { return b.r.Close() }
