package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// The deferral IPC (seed v2: components may defer an update until they have cleaned up).
// Local software connects to the agent's unix socket and speaks newline-delimited JSON:
//
//	→ {"op":"subscribe","component":"com.example.Logger"}
//	← {"type":"subscribed"}
//	← {"type":"update-pending","jobId":"…","software":"core","version":"2.0.0"}
//	→ {"op":"defer","jobId":"…","recheckAfterMs":60000,"message":"flushing buffers"}
//	→ {"op":"ack","jobId":"…"}      (or defer with recheckAfterMs 0: go ahead)
//
// Local software may also report application metrics, which the agent adds to its health
// record (health.go) for the rollout's health gates; no subscription is needed:
//
//	→ {"op":"metric","name":"errors","value":1,"add":true}    (a counter: added)
//	→ {"op":"metric","name":"queueDepth","value":12}          (a gauge: replaced)
//	← {"type":"ok"}   or   {"type":"error","error":"…"}
//
// A component that does not answer within the response timeout is taken to agree.

// IPCMessage is one line of the deferral protocol, in either direction.
type IPCMessage struct {
	Op             string `json:"op,omitempty"`
	Type           string `json:"type,omitempty"`
	Component      string `json:"component,omitempty"`
	JobID          string `json:"jobId,omitempty"`
	Software       string `json:"software,omitempty"`
	Version        string `json:"version,omitempty"`
	RecheckAfterMs int64  `json:"recheckAfterMs,omitempty"`
	Message        string `json:"message,omitempty"`
	Error          string `json:"error,omitempty"`
	// Name, Value and Add are a metric report.
	Name  string   `json:"name,omitempty"`
	Value *float64 `json:"value,omitempty"`
	Add   bool     `json:"add,omitempty"`
}

// Deferral is a component's request to wait.
type Deferral struct {
	Component string
	After     time.Duration
	Message   string
}

type ipcServer struct {
	ln      net.Listener
	log     zerolog.Logger
	timeout time.Duration

	mu   sync.Mutex
	subs map[*ipcConn]struct{}
	// onMetric records a metric report (the agent's SetMetric).
	onMetric func(name string, value float64, add bool) error
}

type ipcConn struct {
	conn      net.Conn
	component string
	replies   chan IPCMessage
	wmu       sync.Mutex
}

func (c *ipcConn) send(m IPCMessage) error {
	raw, _ := json.Marshal(m)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
	_, err := c.conn.Write(append(raw, '\n'))
	return err
}

// maxIPCLine bounds one protocol line, so a misbehaving local process cannot exhaust memory.
const maxIPCLine = 64 << 10

func listenIPC(path string, responseTimeout time.Duration, log zerolog.Logger) (*ipcServer, error) {
	// A socket left by a previous run (crash, power cut) is stale: the single-instance lock
	// guarantees no other agent is serving it.
	if st, err := os.Lstat(path); err == nil && st.Mode()&os.ModeSocket != 0 {
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("deferral socket %s: %w (set --ipc-socket to another path, or to \"\" to turn deferrals off)", path, err)
	}
	// Local components may run as other users; the socket is their only channel to the agent.
	os.Chmod(path, 0o666)
	s := &ipcServer{ln: ln, log: log, timeout: responseTimeout, subs: map[*ipcConn]struct{}{}}
	go s.accept()
	return s, nil
}

func (s *ipcServer) Close() error {
	err := s.ln.Close()
	s.mu.Lock()
	for c := range s.subs {
		c.conn.Close()
	}
	s.mu.Unlock()
	return err
}

func (s *ipcServer) accept() {
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			return
		}
		go s.serve(conn)
	}
}

func (s *ipcServer) serve(conn net.Conn) {
	c := &ipcConn{conn: conn, replies: make(chan IPCMessage, 4)}
	defer func() {
		s.mu.Lock()
		delete(s.subs, c)
		s.mu.Unlock()
		conn.Close()
	}()
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 4096), maxIPCLine)
	for sc.Scan() {
		var m IPCMessage
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			c.send(IPCMessage{Type: "error", Error: "not a JSON message: " + err.Error()})
			continue
		}
		switch m.Op {
		case "subscribe":
			if m.Component == "" {
				c.send(IPCMessage{Type: "error", Error: "subscribe needs a component name"})
				continue
			}
			c.component = m.Component
			s.mu.Lock()
			s.subs[c] = struct{}{}
			s.mu.Unlock()
			s.log.Debug().Str("component", m.Component).Msg("component subscribed to update notices")
			c.send(IPCMessage{Type: "subscribed"})
		case "defer", "ack":
			select {
			case c.replies <- m:
			default:
			}
		case "metric":
			var err error
			switch {
			case m.Value == nil:
				err = errors.New("a metric needs a numeric value")
			case s.onMetric == nil:
				err = errors.New("this agent keeps no metrics")
			default:
				err = s.onMetric(m.Name, *m.Value, m.Add)
			}
			if err != nil {
				c.send(IPCMessage{Type: "error", Error: err.Error()})
				continue
			}
			c.send(IPCMessage{Type: "ok"})
		default:
			c.send(IPCMessage{Type: "error", Error: fmt.Sprintf("unknown op %q: use subscribe, defer, ack or metric", m.Op)})
		}
	}
	if errors.Is(sc.Err(), bufio.ErrTooLong) {
		c.send(IPCMessage{Type: "error", Error: fmt.Sprintf("message longer than %d bytes; closing", maxIPCLine)})
	}
}

// ask tells every subscribed component that an update is pending and returns the longest
// deferral asked for, or nil when all agree (or do not answer in time).
func (s *ipcServer) ask(ctx context.Context, notice IPCMessage) *Deferral {
	s.mu.Lock()
	subs := make([]*ipcConn, 0, len(s.subs))
	for c := range s.subs {
		subs = append(subs, c)
	}
	s.mu.Unlock()
	notice.Type = "update-pending"
	var longest *Deferral
	deadline := time.After(s.timeout)
	waiting := 0
	for _, c := range subs {
		for len(c.replies) > 0 { // drop answers to an earlier notice
			<-c.replies
		}
		if c.send(notice) == nil {
			waiting++
		}
	}
	answers := make(chan struct {
		c *ipcConn
		m IPCMessage
	}, len(subs))
	stop := make(chan struct{})
	defer close(stop)
	for _, c := range subs {
		go func() {
			for {
				select {
				case m := <-c.replies:
					if m.JobID != "" && m.JobID != notice.JobID {
						continue
					}
					answers <- struct {
						c *ipcConn
						m IPCMessage
					}{c, m}
					return
				case <-stop:
					return
				}
			}
		}()
	}
	for ; waiting > 0; waiting-- {
		select {
		case a := <-answers:
			if a.m.Op == "defer" && a.m.RecheckAfterMs > 0 {
				d := &Deferral{Component: a.c.component, After: time.Duration(a.m.RecheckAfterMs) * time.Millisecond, Message: a.m.Message}
				if longest == nil || d.After > longest.After {
					longest = d
				}
			}
		case <-deadline:
			return longest
		case <-ctx.Done():
			return longest
		}
	}
	return longest
}
