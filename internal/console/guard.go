package console

import (
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/otaflow/otaflow/internal/localiot"
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

// CheckPassword refuses a console password that is easy to guess (localiot.CheckPassword).
func CheckPassword(pw string) error { return localiot.CheckPassword("the console password", pw) }
