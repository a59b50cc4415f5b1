// Package mqtttest starts real MQTT brokers for tests: otaflow's embedded broker, and Debian's
// mosquitto configured with the ACL shipped in deploy/mosquitto.
package mqtttest

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/otaflow/otaflow/internal/broker"
)

// ServiceUser and ServicePassword are the jobs service's broker credentials in tests.
const (
	ServiceUser     = "otaflow-jobs"
	ServicePassword = "test-service-password"
)

// Broker is a started broker.
type Broker struct {
	Name string
	URL  string
}

// All returns a starter for each broker kind, for table tests.
func All() []func(t testing.TB) Broker {
	return []func(t testing.TB) Broker{Embedded, Mosquitto}
}

// Embedded starts otaflow's embedded broker.
func Embedded(t testing.TB) Broker {
	t.Helper()
	b, err := broker.Start(broker.Options{Addr: "127.0.0.1:0", ServiceUser: ServiceUser, ServicePassword: ServicePassword, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatalf("start embedded broker: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return Broker{Name: "embedded", URL: b.URL()}
}

func repoFile(rel string) string {
	_, here, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(here), "..", "..", rel)
}

// shippedSettings is deploy/mosquitto/mosquitto.conf without what a test sets itself (the
// listener, files, persistence and logging), so tests run with the shipped limits.
func shippedSettings(t testing.TB) string {
	data, err := os.ReadFile(repoFile("deploy/mosquitto/mosquitto.conf"))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for _, line := range strings.Split(string(data), "\n") {
		switch f := strings.Fields(line); {
		case len(f) == 0 || strings.HasPrefix(f[0], "#"):
		case f[0] == "listener" || f[0] == "allow_anonymous" || f[0] == "password_file" || f[0] == "acl_file" ||
			strings.HasPrefix(f[0], "persistence") || strings.HasPrefix(f[0], "log_"):
		default:
			out.WriteString(line + "\n")
		}
	}
	return out.String()
}

// Mosquitto starts Debian's mosquitto with deploy/mosquitto/acl and the shipped limits. It
// fails (never skips) when mosquitto is missing: `make deps` installs it.
func Mosquitto(t testing.TB) Broker {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		t.Fatalf("mosquitto is not installed: run `make deps` (apt-get install mosquitto)")
	}
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	if out, err := exec.Command("mosquitto_passwd", "-c", "-b", passwd, ServiceUser, ServicePassword).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v: %s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	conf := filepath.Join(dir, "mosquitto.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`listener %d 127.0.0.1
allow_anonymous true
password_file %s
acl_file %s
persistence false
user root
log_dest stderr
%s`, port, passwd, repoFile("deploy/mosquitto/acl"), shippedSettings(t))), 0o600)
	cmd := exec.Command(bin, "-c", conf)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start mosquitto: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			s := bufio.NewScanner(&logs)
			for s.Scan() {
				t.Log("mosquitto: " + s.Text())
			}
		}
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto did not listen on %s: %s", addr, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return Broker{Name: "mosquitto", URL: "tcp://" + addr}
}
