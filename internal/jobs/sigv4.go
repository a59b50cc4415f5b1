package jobs

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

// Credentials are the one access key the local jobs service accepts.
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey string
}

// SigV4Verifier checks AWS Signature Version 4 on every request, the way AWS IoT does, so
// the same clients that talk to AWS talk to us, and nothing unsigned gets through.
type SigV4Verifier struct {
	Creds   Credentials
	Region  string
	Service string // "iot"; greengrass requests are signed for "greengrass"
	Now     func() time.Time
	// MaxSkew is how far the request time may be from ours (AWS allows 15 minutes).
	MaxSkew time.Duration
}

const maxSignedBody = maxRequestBytes

// Middleware rejects any request whose signature does not verify.
func (v *SigV4Verifier) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := v.Verify(r); err != nil {
			name := "UnrecognizedClientException"
			if strings.Contains(err.Error(), "signature does not match") {
				name = "InvalidSignatureException"
			}
			w.Header().Set("X-Amzn-Errortype", name)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprintf(w, "{\"message\":%q}\n", err.Error())
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Verify checks r's Authorization header. It reads and restores the body.
func (v *SigV4Verifier) Verify(r *http.Request) error {
	authz := r.Header.Get("Authorization")
	if authz == "" {
		return fmt.Errorf("request is not signed: sign it with AWS Signature Version 4 using the jobs service's access key (%s)", v.Creds.AccessKeyID)
	}
	const algo = "AWS4-HMAC-SHA256"
	if !strings.HasPrefix(authz, algo+" ") {
		return fmt.Errorf("authorization uses an unsupported algorithm; use %s", algo)
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
		return fmt.Errorf("authorization header has a malformed Credential")
	}
	if scope[0] != v.Creds.AccessKeyID {
		return fmt.Errorf("the security token included in the request is invalid: unknown access key %q", scope[0])
	}
	if scope[2] != v.Region {
		return fmt.Errorf("credential should be scoped to a valid region %q, not %q", v.Region, scope[2])
	}
	amzDate := r.Header.Get("X-Amz-Date")
	t, err := time.Parse("20060102T150405Z", amzDate)
	if err != nil {
		return fmt.Errorf("request has no valid X-Amz-Date header")
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	skew := v.MaxSkew
	if skew == 0 {
		skew = 15 * time.Minute
	}
	if d := now().Sub(t); d > skew || d < -skew {
		return fmt.Errorf("signature expired: request time %s is more than %s from server time; check the client's clock", amzDate, skew)
	}
	if scope[1] != t.Format("20060102") {
		return fmt.Errorf("credential date %s does not match X-Amz-Date %s", scope[1], amzDate)
	}

	var payloadHash string
	if h := strings.ToLower(r.Header.Get("X-Amz-Content-Sha256")); len(h) == 64 && isHex(h) {
		// The client states the body's hash (as S3 uploads do): the signature covers the
		// claim, and the body is checked against it as it streams, so artifacts of any size
		// are never held in memory. A body that does not match fails the read.
		payloadHash = h
		r.Body = &hashCheckingBody{r: r.Body, h: sha256.New(), want: h}
	} else {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxSignedBody+1))
		if err != nil {
			return fmt.Errorf("read request body: %w", err)
		}
		if len(body) > maxSignedBody {
			return fmt.Errorf("request body exceeds %d bytes; for large uploads send x-amz-content-sha256 with the body's SHA-256", maxSignedBody)
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		sum := sha256.Sum256(body)
		payloadHash = hex.EncodeToString(sum[:])
		if h != "" && h != "unsigned-payload" && h != payloadHash {
			return fmt.Errorf("x-amz-content-sha256 does not match the request body")
		}
	}

	signed := strings.Split(fields["SignedHeaders"], ";")
	if !contains(signed, "host") {
		return fmt.Errorf("the host header must be signed")
	}
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
	key := hmacSHA256([]byte("AWS4"+v.Creds.SecretAccessKey), scope[1])
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
