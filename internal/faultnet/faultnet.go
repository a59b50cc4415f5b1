// Package faultnet makes network faults for tests: TCP links that can be partitioned (data
// held, connections left open, as when a network drops a machine's traffic) or taken down
// (connections reset, new ones refused, as when a server stops), and network namespaces whose
// only ways out are such links, so that a process run in one can be cut off from one peer
// while it still reaches the others.
package faultnet

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Link forwards TCP connections from a listening address to a target, each end in a network
// namespace of its own choosing.
type Link struct {
	ln     net.Listener
	dial   func() (net.Conn, error)
	cut    atomic.Bool
	down   atomic.Bool
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed chan struct{}
}

// NewLink listens on listen (in namespace from; nil: this process's) and forwards each
// connection to target (dialled in namespace to; nil: this process's).
func NewLink(from *Namespace, listen string, to *Namespace, target string) (*Link, error) {
	var ln net.Listener
	err := from.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", listen)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s in %s: %w", listen, from, err)
	}
	l := &Link{ln: ln, conns: map[net.Conn]struct{}{}, closed: make(chan struct{}),
		dial: func() (c net.Conn, err error) {
			err = to.Do(func() error {
				c, err = net.DialTimeout("tcp", target, 5*time.Second)
				return err
			})
			return c, err
		}}
	go l.accept()
	return l, nil
}

// Addr is the address the link listens on.
func (l *Link) Addr() string { return l.ln.Addr().String() }

// Partition holds everything sent either way while on (connections stay open and carry
// nothing, neither data nor a reset); off delivers what was held and carries on.
func (l *Link) Partition(on bool) { l.cut.Store(on) }

// Down resets every connection and refuses new ones while on, as a stopped server does.
func (l *Link) Down(on bool) {
	l.down.Store(on)
	if !on {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0) // a reset, not an orderly close
		}
		c.Close()
	}
}

// Close stops the link and closes its connections.
func (l *Link) Close() {
	l.cut.Store(false)
	l.Down(true)
	l.ln.Close()
}

func (l *Link) accept() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		if l.down.Load() {
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
			continue
		}
		go func() {
			s, err := l.dial()
			if err != nil {
				c.Close()
				return
			}
			if !l.track(c, s) {
				return
			}
			go l.pipe(s, c)
			l.pipe(c, s)
		}()
	}
}

// track registers both ends of a forwarded connection, or closes them when the link is down.
func (l *Link) track(a, b net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down.Load() {
		a.Close()
		b.Close()
		return false
	}
	l.conns[a], l.conns[b] = struct{}{}, struct{}{}
	return true
}

// pipe copies from src to dst, holding what it read while the link is partitioned.
func (l *Link) pipe(dst, src net.Conn) {
	defer func() {
		dst.Close()
		l.mu.Lock()
		delete(l.conns, dst)
		delete(l.conns, src)
		l.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		for l.cut.Load() && !l.down.Load() {
			time.Sleep(10 * time.Millisecond)
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Namespace is a network namespace with only its loopback interface: a process run in it
// reaches nothing outside but through Links.
type Namespace struct {
	Name string
	fd   int
}

var namespaces atomic.Int64

// NewNamespace makes a network namespace (it needs root, and `ip` from iproute2).
func NewNamespace() (*Namespace, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("making a network namespace needs root")
	}
	name := fmt.Sprintf("otaflow-%d-%d", os.Getpid(), namespaces.Add(1))
	for _, args := range [][]string{{"netns", "add", name}, {"-n", name, "link", "set", "lo", "up"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			exec.Command("ip", "netns", "del", name).Run()
			return nil, fmt.Errorf("ip %v: %v: %s", args, err, out)
		}
	}
	fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		exec.Command("ip", "netns", "del", name).Run()
		return nil, err
	}
	return &Namespace{Name: name, fd: fd}, nil
}

func (n *Namespace) String() string {
	if n == nil {
		return "this process's network namespace"
	}
	return "network namespace " + n.Name
}

// Do runs fn on a thread in the namespace (nil: as is). Sockets fn creates stay in it.
func (n *Namespace) Do(fn func() error) error {
	if n == nil {
		return fn()
	}
	runtime.LockOSThread()
	self, err := unix.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer unix.Close(self)
	if err := unix.Setns(n.fd, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter %s: %w", n, err)
	}
	err = fn()
	if unix.Setns(self, unix.CLONE_NEWNET) == nil {
		runtime.UnlockOSThread() // otherwise the thread ends with its goroutine
	}
	return err
}

// Command is name run with args in the namespace.
func (n *Namespace) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Close removes the namespace.
func (n *Namespace) Close() error {
	unix.Close(n.fd)
	if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del %s: %v: %s", n.Name, err, out)
	}
	return nil
}
