// Package broker runs otaflow's embedded MQTT broker (mochi-mqtt) with the AWS IoT policy
// devices get in production: a device connects with its thing name as client ID and may only
// use its own $aws/things/{thing}/ topics; only the jobs service may use every thing's.
package broker

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/otaflow/otaflow/internal/iotjobs"
)

// Options configure the broker.
type Options struct {
	// Addr is the TCP listen address, e.g. 127.0.0.1:1883.
	Addr string
	// ServiceUser and ServicePassword are the credentials of the privileged jobs service.
	ServiceUser     string
	ServicePassword string
	// MaxPacketBytes bounds every packet (and so a client's memory cost); 0 means 128 KiB,
	// AWS IoT Core's message size limit.
	MaxPacketBytes uint32
	// TLSAddr, with TLS, adds a mutual-TLS listener like AWS IoT Core's (8883, or 443 with
	// ALPN x-amzn-mqtt-ca): a device's certificate common name must be its client ID.
	TLSAddr string
	TLS     *tls.Config
	// DevicesOnTLSOnly refuses devices on the plain listener, which then serves only the jobs
	// service: a device's identity is its certificate, never a client ID it chose.
	DevicesOnTLSOnly bool
	// PublishesPerSecond and BytesPerSecond cap each device connection's inbound publishes,
	// as AWS IoT Core does (100 publishes and 512 KiB per second per connection; 0 means
	// those). Excess publishes are dropped, so a runaway device can neither starve the fleet's
	// jobs traffic nor fill the broker's queues. The jobs service is exempt.
	PublishesPerSecond float64
	BytesPerSecond     int
	// DevicePayloadBytes caps one device publish (0: 16 KiB). Jobs API requests are small
	// (statusDetails is at most 10 short pairs); only the service sends documents.
	DevicePayloadBytes int
	// DeviceShadows are the named shadows a device may use on its own thing (default: the
	// agent's inventory and health shadows); any other shadow topic is refused, as AWS IoT's policy
	// variables scope them.
	DeviceShadows []string
	Logger        zerolog.Logger
}

// Broker is a running embedded broker.
type Broker struct {
	hook      *policyHook
	srv       *mqtt.Server
	addr      string
	tlsAddr   string
	listeners []*listener
}

// listen opens a listener for the broker. We listen ourselves rather than let mochi do it:
// mochi reports a busy port only from its serve goroutine, and Close needs the connections.
func listen(id, addr, flag string, tlsConfig *tls.Config) (*listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("MQTT broker cannot listen on %s: %w (choose another address with %s)", addr, err, flag)
	}
	return &listener{id: id, addr: ln.Addr().String(), ln: ln, tls: tlsConfig, conns: map[net.Conn]struct{}{}}, nil
}

// listener is our mochi listener. Unlike mochi's own it knows its open connections and the
// goroutines handing them to the server, so that Close can end them all and wait for them
// before mochi's Close waits on its client WaitGroup: a connection accepted just before the
// listener closed would otherwise call that WaitGroup's Add while Close waits on it (a data
// race the race detector caught in CI).
type listener struct {
	id, addr string
	ln       net.Listener
	tls      *tls.Config // nil: plain TCP
	mu       sync.Mutex
	closed   bool
	conns    map[net.Conn]struct{}
	serving  sync.WaitGroup // one per connection being served
}

func (l *listener) Init(*slog.Logger) error { return nil }
func (l *listener) ID() string              { return l.id }
func (l *listener) Address() string         { return l.addr }
func (l *listener) Protocol() string        { return "tcp" }

// Serve hands every accepted connection to the server until the listener closes.
func (l *listener) Serve(establish listeners.EstablishFn) {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			c.Close()
			return
		}
		l.conns[c] = struct{}{}
		l.serving.Add(1)
		l.mu.Unlock()
		var conn net.Conn = &trackedConn{Conn: c, l: l}
		if l.tls != nil {
			conn = tls.Server(conn, l.tls)
		}
		go func() {
			defer l.serving.Done()
			_ = establish(l.id, conn) // the client's fate is logged by the hooks
		}()
	}
}

// Close stops accepting and closes every open connection; mochi's client sweep is not used
// (see Broker.Close).
func (l *listener) Close(listeners.CloseFn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	l.ln.Close()
	for c := range l.conns {
		c.Close()
	}
}

type trackedConn struct {
	net.Conn
	l *listener
}

func (c *trackedConn) Close() error {
	c.l.mu.Lock()
	delete(c.l.conns, c.Conn)
	c.l.mu.Unlock()
	return c.Conn.Close()
}

// Start listens on o.Addr and serves until Close.
func Start(o Options) (*Broker, error) {
	if o.ServiceUser == "" || o.ServicePassword == "" {
		return nil, fmt.Errorf("broker: the jobs service's MQTT user and password must be set")
	}
	if o.MaxPacketBytes == 0 {
		o.MaxPacketBytes = 128 * 1024
	}
	ln, err := listen("tcp", o.Addr, "--mqtt-addr", nil)
	if err != nil {
		return nil, err
	}

	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = o.MaxPacketBytes
	// Bound what waits to be written to one client (the jobs service, when devices outpace
	// it): at most this many packets, each at most DevicePayloadBytes from a device (32 MiB
	// in the worst case, a few MiB in practice); the rest are dropped and the devices retry.
	// mochi gives every client a queue this long, made when it connects, so it is paid per
	// device: at 16,384 the queues alone held 1.3 GB at 10,000 devices, and the GC work
	// they caused cost rollout throughput (starter bench at 10,000 devices: 6,962 → 12,032
	// devices/min, stack peak RSS 4,350 → 1,491 MiB with 2,048). A 10,000-device wave
	// starting at once stays within 2,048 because the jobs service reads without ever
	// waiting on its store.
	caps.MaximumClientWritesPending = 2048
	// The jobs service takes every device's requests at QoS 1: with the default 8,192
	// unacknowledged messages a 10,000-device wave starting at once overflowed it and
	// requests were dropped (devices waited out their request timeout). 65,535 is MQTT's
	// packet ID space.
	caps.MaximumInflight = 65535
	srv := mqtt.New(&mqtt.Options{
		Capabilities: caps,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		// The broker answers some device publishes itself (policyHook.reject).
		InlineClient: true,
	})
	if o.PublishesPerSecond == 0 {
		o.PublishesPerSecond = 100
	}
	if o.BytesPerSecond == 0 {
		o.BytesPerSecond = 512 * 1024
	}
	if o.DevicePayloadBytes == 0 {
		o.DevicePayloadBytes = 16 * 1024
	}
	if len(o.DeviceShadows) == 0 {
		o.DeviceShadows = []string{iotjobs.InventoryShadow, iotjobs.HealthShadow}
	}
	hook := &policyHook{user: []byte(o.ServiceUser), pass: []byte(o.ServicePassword), log: o.Logger, tlsOnly: o.DevicesOnTLSOnly, shadows: o.DeviceShadows,
		rate: o.PublishesPerSecond, byteRate: o.BytesPerSecond, maxPacket: int(o.MaxPacketBytes), maxPayload: o.DevicePayloadBytes, srv: srv}
	if err := srv.AddHook(hook, nil); err != nil {
		ln.Close(nil)
		return nil, err
	}
	b := &Broker{srv: srv, addr: ln.addr, listeners: []*listener{ln}, hook: hook}
	if o.TLS != nil {
		tc := o.TLS.Clone()
		if tc.ClientAuth == tls.RequireAndVerifyClientCert && tc.ClientCAs != nil {
			// The CA list is not advertised: a TLS client sends only a certificate from a CA on
			// it, and one registered without a CA is from none.
			tc.ClientAuth, tc.VerifyPeerCertificate, tc.ClientCAs = tls.RequireAnyClientCert, hook.verifyClient(tc.ClientCAs), nil
		}
		tln, err := listen("tls", o.TLSAddr, "--mqtt-tls-addr", tc)
		if err != nil {
			ln.Close(nil)
			return nil, err
		}
		b.tlsAddr, b.listeners = tln.addr, append(b.listeners, tln)
	}
	for _, l := range b.listeners {
		if err := srv.AddListener(l); err != nil {
			b.closeListeners()
			return nil, fmt.Errorf("MQTT broker listener on %s: %w", l.addr, err)
		}
	}
	if err := srv.Serve(); err != nil {
		b.Close()
		return nil, fmt.Errorf("start MQTT broker: %w", err)
	}
	o.Logger.Info().Str("addr", b.addr).Str("tlsAddr", b.tlsAddr).Msg("MQTT broker listening")
	return b, nil
}

// SetCertificateCheck lets check decide on the certificates of devices that connect from now
// on (the jobs service's certificate registry): from then on a certificate it does not admit
// connects nothing, whoever signed it.
func (b *Broker) SetCertificateCheck(check CertificateCheck) { b.hook.certs.Store(&check) }

// SetProvisioner lets p answer the device provisioning MQTT API for devices connected with a
// claim certificate (AWS IoT's fleet provisioning by claim). The answer goes back on the
// connection that asked, as AWS IoT Core delivers it: two devices sharing a claim certificate
// never see each other's keys.
func (b *Broker) SetProvisioner(p Provisioner) { b.hook.provision.Store(&p) }

// Provisioner answers one provisioning request: the reply's topic and payload.
type Provisioner func(topic string, payload []byte) (replyTopic string, reply []byte)

// verifyClient is the TLS listener's check of a device certificate: it must chain to the
// device CA, unless the registry knows it as registered without a CA (AWS's
// RegisterCertificateWithoutCA), whose connect the registry then decides as any other's.
func (h *policyHook) verifyClient(pool *x509.CertPool) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("the device presented no certificate")
		}
		certs := make([]*x509.Certificate, len(raw))
		for i, r := range raw {
			c, err := x509.ParseCertificate(r)
			if err != nil {
				return fmt.Errorf("the device certificate does not parse: %w", err)
			}
			certs[i] = c
		}
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		_, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		if err == nil {
			return nil
		}
		if check := h.certs.Load(); check != nil {
			if a := (*check)(certs[0], ""); a.WithoutCA {
				return nil
			}
		}
		return err
	}
}

// DisconnectCertificate disconnects every device connected with the certificate whose SHA-256
// (of its DER, in hex) is id; each may connect again only if the certificate check admits it.
func (b *Broker) DisconnectCertificate(id string) int {
	n := 0
	for _, cl := range b.srv.Clients.GetAll() {
		tc, ok := cl.Net.Conn.(*tls.Conn)
		if !ok {
			continue
		}
		certs := tc.ConnectionState().PeerCertificates
		if len(certs) == 0 {
			continue
		}
		if sum := sha256.Sum256(certs[0].Raw); hex.EncodeToString(sum[:]) == id {
			b.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
			n++
		}
	}
	return n
}

// TLSURL is the mutual-TLS listener's client URL ("" without one).
func (b *Broker) TLSURL() string {
	if b.tlsAddr == "" {
		return ""
	}
	return "ssl://" + b.tlsAddr
}

// Addr is the address the broker listens on.
func (b *Broker) Addr() string { return b.addr }

// URL is the broker's address as an MQTT client URL.
func (b *Broker) URL() string { return "tcp://" + b.addr }

// Close stops the broker and disconnects every client.
//
// mochi's own Close sweeps clients with Clients.GetByListener, which takes the clients' read
// lock twice, so a client connecting or leaving in between deadlocks the broker for good
// (mochi-mqtt/server#488, unfixed in v2.7.9; it hung CI while a fleet reconnected). And a
// client that lost a race for its client ID can be connected without being in mochi's client
// list, which left mochi's Close waiting for it. So our listeners skip mochi's sweep: they
// close every connection themselves, and mochi's Close runs only once every connection's
// goroutine has ended.
func (b *Broker) Close() error {
	b.closeListeners()
	return b.srv.Close()
}

// closeListeners stops accepting, closes every connection and waits until the server is done
// with each.
func (b *Broker) closeListeners() {
	for _, l := range b.listeners {
		l.Close(nil)
	}
	for _, l := range b.listeners {
		l.serving.Wait()
	}
}

// policyHook authenticates clients and enforces the per-thing topic policy.
type policyHook struct {
	mqtt.HookBase
	user, pass []byte
	log        zerolog.Logger
	rate       float64
	byteRate   int
	maxPacket  int
	maxPayload int
	srv        *mqtt.Server
	limiters   sync.Map // *mqtt.Client → *limits
	tlsOnly    bool
	shadows    []string
	// certs decides on registered device certificates (SetCertificateCheck).
	certs atomic.Pointer[CertificateCheck]
	// provision answers claim devices' provisioning requests (SetProvisioner).
	provision atomic.Pointer[Provisioner]
	// claims are the connections made with a claim certificate (*mqtt.Client → *atomic.Bool,
	// set while one of its requests is being answered).
	claims sync.Map
}

// CertificateCheck decides whether a device presenting cert may connect as clientID (""
// when only asked whether the certificate is registered without a CA).
type CertificateCheck func(cert *x509.Certificate, clientID string) Admission

// Admission is the registry's answer about a certificate.
type Admission struct {
	// Allowed admits the connection; Reason says why not.
	Allowed bool
	Reason  string
	// Claim admits it as a claim certificate's: only the provisioning topics.
	Claim bool
	// WithoutCA is a certificate registered without a CA: no CA chain is asked of it.
	WithoutCA bool
}

// limits are one connection's publish budgets.
type limits struct{ publishes, bytes *rate.Limiter }

func (h *policyHook) ID() string { return "otaflow-policy" }

func (h *policyHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck || b == mqtt.OnPublish || b == mqtt.OnDisconnect || b == mqtt.OnSessionEstablished
}

// OnPublish drops a device's publishes beyond its rate, and answers itself those the jobs
// service never sees: oversized ones, and topics in the Jobs namespace that are no Jobs API
// (replies and notifications included: only the service sends those).
func (h *policyHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if h.isService(cl) || cl.Net.Inline { // the broker's own client sends only reject's replies
		return pk, nil
	}
	v, ok := h.limiters.Load(cl)
	if !ok {
		v, _ = h.limiters.LoadOrStore(cl, &limits{
			publishes: rate.NewLimiter(rate.Limit(h.rate), int(h.rate)),
			bytes:     rate.NewLimiter(rate.Limit(h.byteRate), max(h.byteRate, h.maxPacket)),
		})
	}
	l := v.(*limits)
	req, inJobs := iotjobs.ParseRequestTopic(pk.TopicName)
	if len(pk.Payload) > h.maxPayload {
		// Answered, not dropped in silence, within the device's publish rate (so a flood of
		// oversized requests gets no more replies than it may send requests).
		if l.publishes.Allow() {
			if inJobs {
				h.reject(pk, iotjobs.CodeInvalidRequest, fmt.Sprintf("the request is %d bytes; a device may send at most %d (a Jobs request needs a few hundred: statusDetails holds at most 10 short pairs)", len(pk.Payload), h.maxPayload))
			}
		}
		// Acknowledged but not delivered: a device waiting on its PUBACK is not left hanging.
		return pk, packets.CodeSuccessIgnore
	}
	if !l.publishes.Allow() || !l.bytes.AllowN(time.Now(), len(pk.Payload)) {
		return pk, packets.ErrRejectPacket
	}
	if busy, claim := h.claims.Load(cl); claim {
		h.provisionFor(cl, pk, busy.(*atomic.Bool))
		return pk, packets.CodeSuccessIgnore
	}
	if inJobs && req.Op == iotjobs.OpUnknown {
		// In the Jobs namespace but no Jobs API: AWS answers InvalidTopic.
		h.reject(pk, iotjobs.CodeInvalidTopic, iotjobs.InvalidTopicMessage(pk.TopicName))
		return pk, packets.CodeSuccessIgnore
	}
	return pk, nil
}

// provisionFor answers a claim device's provisioning request on its own connection, if it
// subscribed to the answer's topic. One request per connection is answered at a time: a claim
// holder flooding requests gets no more certificates made than it waits for.
func (h *policyHook) provisionFor(cl *mqtt.Client, pk packets.Packet, busy *atomic.Bool) {
	p := h.provision.Load()
	if p == nil {
		h.log.Warn().Str("client", cl.ID).Msg("a claim device asked to be provisioned, but this broker has no provisioning service")
		return
	}
	if busy.Swap(true) {
		h.log.Warn().Str("client", cl.ID).Str("topic", pk.TopicName).Msg("provisioning request dropped: this connection's previous one is still being answered")
		return
	}
	topic, payload := pk.TopicName, slices.Clone(pk.Payload)
	go func() { // not within the hook: issuing a certificate takes a while
		replyTopic, reply := (*p)(topic, payload)
		// Free before the answer goes out: a device may ask again the moment it has it.
		busy.Store(false)
		subscribed := false
		for filter := range cl.State.Subscriptions.GetAll() {
			subscribed = subscribed || topicMatches(filter, replyTopic)
		}
		if !subscribed {
			h.log.Warn().Str("client", cl.ID).Str("topic", replyTopic).Msg("provisioning answer not delivered: the device did not subscribe to it before asking")
			return
		}
		out := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: replyTopic, Payload: reply}
		if err := cl.WritePacket(out); err != nil {
			h.log.Warn().Err(err).Str("client", cl.ID).Msg("provisioning answer not delivered")
		}
	}()
}

// The device provisioning MQTT API's request topics (JSON; CBOR is not served).
const (
	TopicCreateCertificate        = "$aws/certificates/create/json"
	TopicCreateCertificateFromCsr = "$aws/certificates/create-from-csr/json"
	provisionPrefix               = "$aws/provisioning-templates/"
	provisionSuffix               = "/provision/json"
)

// ProvisionTopic is the topic a device provisions itself from a template on.
func ProvisionTopic(template string) string { return provisionPrefix + template + provisionSuffix }

// ProvisionTemplate is the template a provisioning request's topic names ("" for the
// certificate requests, ok false for no provisioning request).
func ProvisionTemplate(topic string) (name string, ok bool) {
	if topic == TopicCreateCertificate || topic == TopicCreateCertificateFromCsr {
		return "", true
	}
	name, ok = strings.CutPrefix(topic, provisionPrefix)
	if !ok {
		return "", false
	}
	name, ok = strings.CutSuffix(name, provisionSuffix)
	return name, ok && name != "" && !strings.ContainsAny(name, "/+#")
}

// IsProvisioningRequest reports whether topic is a request of the device provisioning MQTT
// API (not an answer).
func IsProvisioningRequest(topic string) bool {
	_, ok := ProvisionTemplate(topic)
	return ok
}

// isProvisioningTopic: a request, or its accepted or rejected answer.
func isProvisioningTopic(topic string) bool {
	base, ok := strings.CutSuffix(topic, "/accepted")
	if !ok {
		base, _ = strings.CutSuffix(topic, "/rejected")
	}
	return IsProvisioningRequest(base)
}

// topicMatches reports whether an MQTT topic filter matches topic.
func topicMatches(filter, topic string) bool {
	f, t := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, part := range f {
		switch {
		case part == "#":
			return true
		case i >= len(t):
			return false
		case part != "+" && part != t[i]:
			return false
		}
	}
	return len(f) == len(t)
}

// reject answers a device's publish on its rejected topic, as the jobs service answers a
// request it refuses: the code, a message and the request's clientToken. The broker answers
// these itself: an oversized request (which the service never sees) and a topic in the Jobs
// namespace that is no Jobs API (which the service does not subscribe to).
func (h *policyHook) reject(pk packets.Packet, code iotjobs.ErrorCode, message string) {
	var tok iotjobs.Token
	_ = json.Unmarshal(pk.Payload, &tok) // no token when it is not JSON
	raw, err := json.Marshal(&iotjobs.ErrorReply{Code: code, Timestamp: time.Now().Unix(), Token: tok, Message: message})
	if err != nil {
		return
	}
	topic := iotjobs.Rejected(pk.TopicName)
	// Not from within the hook: the publish is delivered by the broker's own client, which
	// must not wait on the connection whose packet is being processed.
	go func() {
		if err := h.srv.Publish(topic, raw, false, 0); err != nil {
			h.log.Warn().Err(err).Str("topic", topic).Str("code", string(code)).Msg("answering a refused device publish failed")
		}
	}()
}

func (h *policyHook) OnDisconnect(cl *mqtt.Client, err error, _ bool) {
	h.limiters.Delete(cl)
	if _, claim := h.claims.LoadAndDelete(cl); claim {
		return // not a thing: no lifecycle event
	}
	if !h.isService(cl) {
		reason := "CLIENT_INITIATED_DISCONNECT"
		if err != nil && !errors.Is(err, io.EOF) {
			reason = "CONNECTION_LOST"
		}
		h.presence(cl, "disconnected", reason)
	}
}

// OnSessionEstablished announces a device's connection.
func (h *policyHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	if _, claim := h.claims.Load(cl); !claim && !h.isService(cl) {
		h.presence(cl, "connected", "")
	}
}

// PresenceTopic is where the broker announces a client's connection or disconnection
// (eventType "connected" or "disconnected"), as AWS IoT Core's lifecycle events do.
func PresenceTopic(event, clientID string) string {
	return "$aws/events/presence/" + event + "/" + clientID
}

// presence publishes AWS's lifecycle event for a device (only the service may read them).
func (h *policyHook) presence(cl *mqtt.Client, event, reason string) {
	ev := map[string]any{"clientId": cl.ID, "timestamp": time.Now().UnixMilli(), "eventType": event}
	if reason != "" {
		ev["disconnectReason"] = reason
	}
	raw, _ := json.Marshal(ev)
	if err := h.srv.Publish(PresenceTopic(event, cl.ID), raw, false, 1); err != nil {
		h.log.Debug().Err(err).Str("client", cl.ID).Msg("presence event not published")
	}
}

func (h *policyHook) isService(cl *mqtt.Client) bool {
	return bytes.Equal(cl.Properties.Username, h.user)
}

// OnConnectAuthenticate admits the service with its password, and devices whose client ID is
// a valid thing name. A device may not pose as the service.
func (h *policyHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	if h.isService(cl) {
		ok := subtle.ConstantTimeCompare(pk.Connect.Password, h.pass) == 1
		if !ok {
			h.log.Warn().Str("client", cl.ID).Msg("MQTT connect refused: wrong password for the jobs service user")
		}
		return ok
	}
	if !ValidThingName(cl.ID) {
		h.log.Warn().Str("client", cl.ID).Msg("MQTT connect refused: client ID must be the device's thing name")
		return false
	}
	if strings.HasPrefix(cl.ID, ReservedClientIDPrefix) {
		// A device connecting with the service's client ID would take its session over: the
		// service would stay connected to nothing and rollouts would stall.
		h.log.Warn().Str("client", cl.ID).Msg("MQTT connect refused: client IDs starting with " + ReservedClientIDPrefix + " are the jobs service's")
		return false
	}
	if tc, ok := cl.Net.Conn.(*tls.Conn); ok {
		certs := tc.ConnectionState().PeerCertificates
		if len(certs) == 0 {
			h.log.Warn().Str("client", cl.ID).Msg("MQTT connect refused: no device certificate")
			return false
		}
		if check := h.certs.Load(); check != nil {
			// The certificate registry decides, as AWS IoT does: a certificate must be
			// registered, ACTIVE and attached to the thing; one attached to no thing is a
			// claim certificate, which may only provision a device.
			a := (*check)(certs[0], cl.ID)
			if !a.Allowed {
				h.log.Warn().Str("client", cl.ID).Str("reason", a.Reason).Msg("MQTT connect refused")
				return false
			}
			if a.Claim {
				h.claims.Store(cl, new(atomic.Bool))
			}
			return true
		}
		// Without a registry (a broker of its own, in tests): as an AWS IoT policy with
		// iot:Connection.Thing.ThingName, the certificate names the thing.
		if certs[0].Subject.CommonName != cl.ID {
			h.log.Warn().Str("client", cl.ID).Msg("MQTT connect refused: the device certificate's common name is not the client ID")
			return false
		}
	} else if h.tlsOnly {
		h.log.Warn().Str("client", cl.ID).Msg("MQTT connect refused: devices connect with their certificate on the TLS listener")
		return false
	}
	return true
}

// OnACLCheck lets a device use only $aws/things/{its client ID}/...; the service may use
// every thing's topics.
// A shared subscription ($share/{group}/{filter}) is checked as its filter: that is what it
// receives.
func (h *policyHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if rest, ok := strings.CutPrefix(topic, "$share/"); ok && !write {
		group, filter, found := strings.Cut(rest, "/")
		if !found || group == "" || strings.ContainsAny(group, "+#") {
			return false
		}
		topic = filter
	}
	if h.isService(cl) {
		return strings.HasPrefix(topic, "$aws/things/") || (!write && strings.HasPrefix(topic, "$aws/events/presence/"))
	}
	if _, claim := h.claims.Load(cl); claim {
		// A claim certificate's connection may provision a device, and do nothing else.
		ok := IsProvisioningRequest(topic) == write && isProvisioningTopic(topic)
		if !ok {
			h.log.Warn().Str("client", cl.ID).Str("topic", topic).Bool("write", write).Msg("MQTT access refused: a claim certificate may only use the device provisioning topics ($aws/certificates/create/json, $aws/certificates/create-from-csr/json, $aws/provisioning-templates/{name}/provision/json and their answers)")
		}
		return ok
	}
	rest, ok := strings.CutPrefix(topic, "$aws/things/"+cl.ID+"/")
	if !ok {
		h.log.Warn().Str("client", cl.ID).Str("topic", topic).Bool("write", write).Msg("MQTT access refused: a device may only use its own $aws/things/{thing}/ topics")
		return false
	}
	if shadow, isShadow := strings.CutPrefix(rest, "shadow/"); isShadow || rest == "shadow" {
		// A device may use its classic shadow, and the named shadows the policy allows.
		name, _, _ := strings.Cut(strings.TrimPrefix(shadow, "name/"), "/")
		if strings.HasPrefix(shadow, "name/") && !slices.Contains(h.shadows, name) {
			h.log.Warn().Str("client", cl.ID).Str("topic", topic).Bool("write", write).Strs("allowed", h.shadows).Msg("MQTT access refused: a device may only use its classic shadow and the named shadows the policy allows")
			return false
		}
	}
	return true
}

// ReservedClientIDPrefix starts the client IDs only the authenticated jobs service may use.
const ReservedClientIDPrefix = "otaflow-jobs"

// ValidThingName reports whether s is a valid AWS IoT thing name.
func ValidThingName(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for _, c := range s {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == ':', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// inlineSubscriptionID identifies InlineSubscribe's subscriptions.
const inlineSubscriptionID = 1

// InlineSubscribe delivers the publishes matching filter to handle in this process, with no
// network connection, packet encoding or acknowledgements between them (the jobs service
// beside its embedded broker). handle runs in the publisher's goroutine, so it must not block;
// payload is its own copy.
func (b *Broker) InlineSubscribe(filter string, handle func(topic string, payload []byte)) error {
	return b.srv.Subscribe(filter, inlineSubscriptionID, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		handle(pk.TopicName, bytes.Clone(pk.Payload))
	})
}

// InlinePublish publishes payload on topic at QoS 1 as the broker's own client, which may use
// every thing's topics (the jobs service's replies and notifications).
func (b *Broker) InlinePublish(topic string, payload []byte) error {
	return b.srv.Publish(topic, payload, false, 1)
}

// Sessions is how many MQTT clients are connected (every device, and the jobs service unless
// it is inline).
func (b *Broker) Sessions() int64 { return atomic.LoadInt64(&b.srv.Info.ClientsConnected) }
