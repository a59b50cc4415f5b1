package console

import (
	"fmt"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode"

	"golang.org/x/time/rate"
)

// Password guessing is slowed per client and overall: each wrong password spends a token;
// a client (or the whole console) without one is told when to try again, and its password is
// not even checked until then. A right password spends nothing.
const (
	clientGuessBurst = 5
	clientGuessEvery = 12 * time.Second // 5 a minute, after the burst
	totalGuessBurst  = 30
	totalGuessEvery  = 2 * time.Second // 30 a minute from everyone together
	maxPasswordBytes = 1024
	maxClients       = 10000
)

type guard struct {
	mu      sync.Mutex
	clients map[string]*rate.Limiter
	total   *rate.Limiter
	now     func() time.Time
}

func newGuard() *guard {
	return &guard{clients: map[string]*rate.Limiter{}, total: rate.NewLimiter(rate.Every(totalGuessEvery), totalGuessBurst), now: time.Now}
}

func clientOf(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// wait is how long the client must wait before its next guess (0: it may guess now).
func (g *guard) wait(client string) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	d := time.Duration(0)
	if l, ok := g.clients[client]; ok && l.TokensAt(now) < 1 {
		d = time.Duration((1 - l.TokensAt(now)) * float64(clientGuessEvery))
	}
	if t := g.total.TokensAt(now); t < 1 {
		d = max(d, time.Duration((1-t)*float64(totalGuessEvery)))
	}
	return d
}

// failed spends a token of the client's and of the total.
func (g *guard) failed(client string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	l, ok := g.clients[client]
	if !ok {
		if len(g.clients) >= maxClients {
			g.clients = map[string]*rate.Limiter{} // the total limit still holds
		}
		l = rate.NewLimiter(rate.Every(clientGuessEvery), clientGuessBurst)
		g.clients[client] = l
	}
	l.AllowN(now, 1)
	g.total.AllowN(now, 1)
}

// authorize answers a request whose password is missing or wrong, or that comes too soon
// after wrong ones; it reports whether the request may go on.
func (c *Console) authorize(w http.ResponseWriter, r *http.Request) bool {
	client := clientOf(r)
	if d := c.guard.wait(client); d > 0 {
		secs := int(math.Ceil(d.Seconds()))
		w.Header().Set("Retry-After", fmt.Sprint(secs))
		http.Error(w, fmt.Sprintf("too many wrong passwords: try again in %d s", secs), http.StatusTooManyRequests)
		return false
	}
	_, pw, ok := r.BasicAuth()
	if ok && len(pw) <= maxPasswordBytes && equalSecret(pw, c.o.Password) {
		return true
	}
	if ok {
		c.guard.failed(client)
		c.o.Logger.Warn().Str("client", client).Msg("console: wrong password")
	}
	w.Header().Set("WWW-Authenticate", `Basic realm="otaflow console"`)
	http.Error(w, "the otaflow console needs its password", http.StatusUnauthorized)
	return false
}

// CheckPassword refuses a console password that is easy to guess: outside a development
// stack it must be at least 20 characters, or 12 with three kinds of character (lower case,
// upper case, digits, others).
func CheckPassword(pw string) error {
	kinds := map[string]bool{}
	for _, r := range pw {
		switch {
		case unicode.IsLower(r):
			kinds["lower"] = true
		case unicode.IsUpper(r):
			kinds["upper"] = true
		case unicode.IsDigit(r):
			kinds["digit"] = true
		default:
			kinds["other"] = true
		}
	}
	n := len([]rune(pw))
	if n > maxPasswordBytes {
		return fmt.Errorf("the console password is longer than %d bytes", maxPasswordBytes)
	}
	if n >= 20 || (n >= 12 && len(kinds) >= 3) {
		if strings.Count(pw, string([]rune(pw)[0])) == n {
			return fmt.Errorf("the console password repeats one character")
		}
		return nil
	}
	return fmt.Errorf("the console password is too easy to guess: use at least 20 characters, or 12 with three kinds (lower case, upper case, digits, others); `openssl rand -hex 16` makes one")
}
