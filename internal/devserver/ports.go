package devserver

import (
	"errors"
	"fmt"
	"net"
	"syscall"
)

// reservePort returns a port that is free on ip and that the kernel will not hand to anyone
// else who asks for a free port for about a minute (TCP's TIME_WAIT), while a listener of
// ours can still bind it (Go listeners set SO_REUSEADDR). A plain "listen on :0, close,
// bind later" races any process that asks for a free port in between; this does not.
//
// The port is put in TIME_WAIT by one connection to it, closed first by the accepting side:
// the accepted socket then lingers in TIME_WAIT on the reserved port.
func reservePort(ip string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return 0, fmt.Errorf("find a free port on %s: %w", ip, err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		return 0, fmt.Errorf("reserve port %d on %s: %w", port, ip, err)
	}
	server, ok := <-accepted
	if !ok {
		c.Close()
		return 0, fmt.Errorf("reserve port %d on %s: accept failed", port, ip)
	}
	server.Close() // the side that closes first holds TIME_WAIT: the listening port's side
	c.Close()
	return port, nil
}

// reserve is reservePort; a test makes it hand out a taken port.
var reserve = reservePort

// checkPortFree fails, naming flag, when port is already bound on ip.
func checkPortFree(ip string, port int, flag string) error {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(port)))
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("port %d on %s is already in use: stop what uses it or pick another port with %s (0 picks a free one)", port, ip, flag)
		}
		return fmt.Errorf("cannot listen on %s:%d: %w (pick another port with %s)", ip, port, err, flag)
	}
	return l.Close()
}

// claimPort returns port when it is free, or a reserved free port when port is 0.
func claimPort(ip string, port int, flag string) (int, error) {
	if port == 0 {
		return reservePort(ip)
	}
	return port, checkPortFree(ip, port, flag)
}
