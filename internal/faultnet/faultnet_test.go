package faultnet

import (
	"bufio"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// echo serves lines back on a loopback port of this process's namespace.
func echo(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					c.Write([]byte(line))
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// A process in a namespace reaches a peer outside only through a link, and the link's faults
// are what a partition and a stopped server look like to it.
func TestNamespaceReachesOutOnlyThroughLinks(t *testing.T) {
	target := echo(t)
	ns, err := NewNamespace()
	require.NoError(t, err)
	defer ns.Close()
	require.Error(t, ns.Do(func() error {
		c, err := net.DialTimeout("tcp", target, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}), "the namespace's loopback is its own")

	link, err := NewLink(ns, target, nil, target) // the same address inside, as a process there expects it
	require.NoError(t, err)
	defer link.Close()
	var c net.Conn
	require.NoError(t, ns.Do(func() (err error) { c, err = net.Dial("tcp", target); return err }))
	defer c.Close()
	r := bufio.NewReader(c)
	roundTrip := func(line string, within time.Duration) (string, error) {
		c.SetDeadline(time.Now().Add(within))
		if _, err := c.Write([]byte(line + "\n")); err != nil {
			return "", err
		}
		return r.ReadString('\n')
	}
	got, err := roundTrip("one", 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, "one\n", got)

	link.Partition(true)
	_, err = roundTrip("two", 300*time.Millisecond)
	var ne net.Error
	require.ErrorAs(t, err, &ne, "nothing arrives while partitioned")
	require.True(t, ne.Timeout(), "nothing arrives while partitioned: %v", err)
	link.Partition(false)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	got, err = r.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "two\n", got, "what was held arrives once the partition heals")

	link.Down(true)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	_, err = r.ReadString('\n')
	require.Error(t, err, "a stopped server resets its connections")
	require.Error(t, ns.Do(func() error {
		c2, err := net.Dial("tcp", target)
		if err != nil {
			return err
		}
		defer c2.Close()
		c2.SetDeadline(time.Now().Add(2 * time.Second))
		_, err = bufio.NewReader(c2).ReadString('\n')
		return err
	}), "and refuses new ones")
	link.Down(false)
	require.NoError(t, ns.Do(func() error {
		c3, err := net.Dial("tcp", target)
		if err != nil {
			return err
		}
		c3.Close()
		return nil
	}), "up again")
}
