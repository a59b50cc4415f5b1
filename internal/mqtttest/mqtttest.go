// Package mqtttest starts real MQTT brokers for tests: otaflow's embedded broker, and Debian's
// mosquitto configured with the ACL shipped in deploy/mosquitto.
package mqtttest

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"

	"github.com/otaflow/otaflow/internal/broker"
	"github.com/otaflow/otaflow/internal/pki"
)

// ServiceUser and ServicePassword are the jobs service's broker credentials in tests.
const (
	ServiceUser     = "otaflow-jobs"
	ServicePassword = "test-service-password"
)

// Broker is a started broker.
type Broker struct {
	Name string
	// URL is where the jobs service connects (with ServiceUser and ServicePassword).
	URL string
	// DeviceURL is where devices connect: on mosquitto the mutual-TLS listener, where a
	// device's identity is its certificate (issued by CA); on the embedded broker, URL.
	DeviceURL string
	CA        *pki.CA
	// CRLFile (mosquitto) is the device listener's crlfile, at first an empty list signed by
	// CA; Reload (mosquitto) has the broker read its configuration and crlfile again (SIGHUP).
	CRLFile string
	Reload  []string
	// Restart, on mosquitto, SIGKILLs the broker and starts it again on the same ports after
	// down (fault tests).
	Restart func(down time.Duration) error
	// Embedded is the embedded broker itself (nil on mosquitto), for a jobs plane in process.
	Embedded *broker.Broker
}

// DeviceTLS is the TLS configuration of a device whose certificate names cn; nil on a broker
// without a TLS device listener.
func (b Broker) DeviceTLS(t testing.TB, cn string) *tls.Config {
	if b.CA == nil {
		return nil
	}
	c, err := b.CA.ClientTLS(cn)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// DeviceOptions are a device's paho options: its client ID, and a certificate naming cn.
func (b Broker) DeviceOptions(t testing.TB, clientID, cn string) *paho.ClientOptions {
	o := paho.NewClientOptions().AddBroker(b.DeviceURL).SetClientID(clientID)
	if c := b.DeviceTLS(t, cn); c != nil {
		o.SetTLSConfig(c)
	}
	return o
}

// ServiceClient connects a client with the jobs service's credentials (which may read and
// write every thing's topics) to b's service listener, and disconnects it when the test ends.
func (b Broker) ServiceClient(t testing.TB, clientID string) paho.Client {
	t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL).SetClientID(clientID).
		SetUsername(ServiceUser).SetPassword(ServicePassword))
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatalf("connect %s to %s: no CONNACK within 10s", clientID, b.URL)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("connect %s to %s: %v", clientID, b.URL, err)
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
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
	return Broker{Name: "embedded", URL: b.URL(), DeviceURL: b.URL(), Embedded: b}
}

func repoFile(rel string) string {
	_, here, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(here), "..", "..", rel)
}

// shippedConfig is deploy/mosquitto/mosquitto.conf as shipped, with only its two listeners'
// ports, the file paths, persistence and logging rewritten for a test.
func shippedConfig(t testing.TB, devicePort, servicePort int, certs map[string]string, passwd string) string {
	data, err := os.ReadFile(repoFile("deploy/mosquitto/mosquitto.conf"))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	out.WriteString("user root\n")
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 0 || strings.HasPrefix(f[0], "#") && f[0] != "#crlfile":
			continue
		case f[0] == "listener" && f[1] == "8883":
			line = fmt.Sprintf("listener %d 127.0.0.1", devicePort)
		case f[0] == "listener" && f[1] == "1883":
			line = fmt.Sprintf("listener %d 127.0.0.1", servicePort)
		case f[0] == "cafile" || f[0] == "certfile" || f[0] == "keyfile":
			line = f[0] + " " + certs[f[0]]
		case f[0] == "#crlfile" && certs["crlfile"] != "":
			line = "crlfile " + certs["crlfile"]
		case f[0] == "acl_file":
			line = "acl_file " + repoFile("deploy/mosquitto/"+filepath.Base(f[1]))
		case f[0] == "password_file":
			line = "password_file " + passwd
		case f[0] == "persistence":
			line = "persistence false"
		case f[0] == "persistence_location":
			continue
		case f[0] == "log_dest":
			line = "log_dest stderr"
		}
		out.WriteString(line + "\n")
	}
	return out.String()
}

func freePort(t testing.TB) int { return freePorts(t, 1)[0] }

// freePorts returns n distinct free ports: each is held until all are chosen, so two calls in a
// row cannot hand out the same one (mosquitto once got one port for both its listeners).
func freePorts(t testing.TB, n int) []int {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// syncBuffer is a buffer a child process writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Mosquitto starts Debian's mosquitto with the shipped configuration: devices on a mutual-TLS
// listener whose certificates (from the broker's CA) are their identity, the jobs service on a
// password listener. It
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
	ca, err := pki.Open(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := ca.IssueFiles(filepath.Join(dir, "ca"), "mosquitto", true, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	crl := filepath.Join(dir, "crl.pem")
	empty, err := ca.RevocationList(1, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(crl, empty, 0o644); err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(dir, "mosquitto.pid")
	ports := freePorts(t, 2)
	devicePort, port := ports[0], ports[1]
	conf := filepath.Join(dir, "mosquitto.conf")
	config := "pid_file " + pidFile + "\n" + shippedConfig(t, devicePort, port, map[string]string{"cafile": ca.CertFile(), "certfile": certFile, "keyfile": keyFile, "crlfile": crl}, passwd)
	os.WriteFile(conf, []byte(config), 0o600)
	var logs syncBuffer
	var mu sync.Mutex
	var cmd *exec.Cmd
	addr, deviceAddr := fmt.Sprintf("127.0.0.1:%d", port), fmt.Sprintf("127.0.0.1:%d", devicePort)
	start := func() error {
		mu.Lock()
		defer mu.Unlock()
		cmd = exec.Command(bin, "-c", conf)
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start mosquitto: %v", err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for _, a := range []string{addr, deviceAddr} {
			for {
				c, err := net.Dial("tcp", a)
				if err == nil {
					c.Close()
					break
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("mosquitto did not listen on %s: %s", a, logs.String())
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		return nil
	}
	kill := func() {
		mu.Lock()
		defer mu.Unlock()
		cmd.Process.Kill()
		cmd.Wait()
	}
	t.Cleanup(func() {
		kill()
		if t.Failed() {
			s := bufio.NewScanner(strings.NewReader(logs.String()))
			for s.Scan() {
				t.Log("mosquitto: " + s.Text())
			}
		}
	})
	if err := start(); err != nil {
		t.Fatal(err)
	}
	restart := func(down time.Duration) error {
		kill()
		time.Sleep(down)
		return start()
	}
	return Broker{Name: "mosquitto", URL: "tcp://" + addr, DeviceURL: "ssl://" + deviceAddr, CA: ca, Restart: restart,
		CRLFile: crl, Reload: []string{"sh", "-c", "kill -HUP $(cat " + pidFile + ")"}}
}
