// Package mqttplane is the local AWS IoT's MQTT device plane: it serves the Jobs topics
// ($aws/things/THING/jobs/...: get, start-next, describe, update, with accepted and rejected
// replies and notify-next) and the named shadow topics over a broker, answering each request
// with the service's operations, and notifies devices when their queue changes. On a shared
// store (PostgreSQL) one replica at a time may serve (Options.Exclusive, leader election).
package mqttplane

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"

	"github.com/otaflow/otaflow/internal/iotjobs"
	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/localiot/store"
)

// Options configure the device-facing plane.
type Options struct {
	// BrokerURL is the broker to connect to, e.g. tcp://127.0.0.1:1883.
	BrokerURL string
	// ClientID, Username and Password identify the service to the broker, which lets it (and
	// only it) use every thing's $aws/things/+/jobs topics.
	ClientID string
	// SharedGroup, when set, receives device requests through the MQTT shared subscription
	// $share/SharedGroup/…: with several replicas on one broker, each request goes to one of
	// them. Replies and notifications are plain publishes either way.
	SharedGroup string
	// Exclusive lets one replica at a time serve device requests: the one holding the leader's
	// lease in the store (PostgreSQL). The others stand by, still publishing the notifications
	// their own changes cause; one takes over at once when the leader shuts down, and within
	// about 11 s when it dies, freezes or loses the database.
	// It works on any broker; SharedGroup spreads the requests instead, on brokers that
	// deliver $aws topics to shared subscriptions.
	Exclusive bool
	// Inline, when set, is the embedded broker in this process: the plane subscribes and
	// publishes through it directly, with no connection, packet encoding or acknowledgements
	// between them (BrokerURL, ClientID, Username and Password are then unused). Not with
	// SharedGroup or Exclusive, which need a session of their own.
	Inline   Inline
	Username string
	Password string
	Logger   zerolog.Logger
}

// Inline is an MQTT broker in this process (internal/broker's embedded one).
type Inline interface {
	// InlineSubscribe calls handle, in the publisher's goroutine, for every publish matching
	// filter.
	InlineSubscribe(filter string, handle func(topic string, payload []byte)) error
	// InlinePublish publishes at QoS 1 as the broker's own client.
	InlinePublish(topic string, payload []byte) error
}

const (
	// planeWorkers serve device requests (many: the store commits concurrent writes
	// together, so more workers mean fewer fsyncs per request); planeQueue requests wait for
	// them, at most
	// perThingQueued of them from one thing. Beyond that a request is refused with
	// RequestThrottled (devices retry) rather than queued without bound.
	planeWorkers   = 1024
	planeQueue     = 8192
	perThingQueued = 8
	// maxInflight QoS 1 publishes await the broker's PUBACK at once (MQTT allows 65,535).
	// A publisher that waits longer than publishWait for room drops the reply: the device asks
	// again, and the session's packet identifiers never run out.
	maxInflight = 2048
	publishWait = 5 * time.Second
)

// Plane serves the AWS IoT Jobs MQTT API for devices over any MQTT broker.
type Plane struct {
	svc    *localiot.Service
	client paho.Client
	// inline is the in-process broker the plane uses instead of client (Options.Inline).
	inline atomic.Pointer[Inline]
	subs   map[string]byte
	log    zerolog.Logger
	// told is what each thing was last told (a notified): notify-next goes out only when the
	// next execution changes, and notify only when an execution joins or leaves the pending
	// list, as AWS does. Lost on restart, which costs at most one repeated notice of each.
	told sync.Map

	requests chan planeRequest
	inflight chan struct{}
	wake     chan struct{}
	done     chan struct{}
	closing  sync.Once
	leading  atomic.Bool // holds the leader's lease (Exclusive)
	// exclusive: only the leader serves device requests (Options.Exclusive).
	exclusive bool
	workers   sync.WaitGroup
	mu        sync.Mutex
	queued    map[string]int      // requests waiting per thing
	dirty     map[string]struct{} // things whose pending jobs changed since the last notify
	// telling is the batch the notifier is telling now: things whose notices may be computed
	// from a read older than their latest change.
	telling map[string]struct{}
}

type planeRequest struct {
	topic   string
	payload []byte
	r       iotjobs.Request
	// shadowOp is set (with shadow, "" for the classic one) for a shadow request instead of a
	// Jobs request.
	shadow, shadowOp string
}

func newPlane(s *localiot.Service, log zerolog.Logger) *Plane {
	return &Plane{svc: s, log: log, requests: make(chan planeRequest, planeQueue), inflight: make(chan struct{}, maxInflight),
		wake: make(chan struct{}, 1), done: make(chan struct{}), queued: map[string]int{}, dirty: map[string]struct{}{}}
}

// ServeMQTT connects the service to the broker and answers the Jobs topics until Close.
func Serve(s *localiot.Service, o Options) (*Plane, error) {
	p := newPlane(s, o.Logger)
	p.exclusive = o.Exclusive
	if o.ClientID == "" {
		o.ClientID = "otaflow-jobs-service"
	}
	subs := map[string]byte{}
	for _, topic := range []string{iotjobs.Topic("+", iotjobs.SuffixStartNext), iotjobs.Topic("+", iotjobs.SuffixGetPending),
		iotjobs.Topic("+", iotjobs.DescribeSuffix("+")), iotjobs.Topic("+", iotjobs.UpdateSuffix("+")),
		localiot.ShadowTopic("+", "+", "update"), localiot.ShadowTopic("+", "+", "get"), localiot.ShadowTopic("+", "+", "delete"),
		localiot.ShadowTopic("+", "", "update"), localiot.ShadowTopic("+", "", "get"), localiot.ShadowTopic("+", "", "delete")} {
		if o.SharedGroup != "" {
			topic = "$share/" + o.SharedGroup + "/" + topic
		}
		subs[topic] = 1
	}
	// Devices' lifecycle events (AWS's $aws/events/presence/…; the embedded broker publishes
	// them), for the fleet index's connectivity.
	subs[localiot.PresenceFilter] = 1
	p.subs = subs
	if o.Inline != nil {
		if o.SharedGroup != "" || o.Exclusive {
			return nil, errors.New("a jobs MQTT plane on its embedded broker serves alone: no shared group, no leader election")
		}
		if err := p.UseInline(o.Inline); err != nil {
			return nil, err
		}
		p.start()
		return p, nil
	}
	opts := paho.NewClientOptions().
		AddBroker(o.BrokerURL).
		SetClientID(o.ClientID).
		SetUsername(o.Username).
		SetPassword(o.Password).
		SetCleanSession(true).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(5 * time.Second).
		// handle only queues, so paho's router never waits on the store.
		SetOrderMatters(true).
		SetOnConnectHandler(func(c paho.Client) {
			if !o.Exclusive || p.leading.Load() {
				p.subscribe(c, subs, o.BrokerURL)
			}
		}).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			p.log.Warn().Err(err).Msg("jobs MQTT plane lost its broker connection; reconnecting")
		})
	p.client = paho.NewClient(opts)
	tok := p.client.Connect()
	if !tok.WaitTimeout(15 * time.Second) {
		p.client.Disconnect(0)
		return nil, fmt.Errorf("connect to MQTT broker %s: timed out; is the broker running?", o.BrokerURL)
	}
	if err := tok.Error(); err != nil {
		p.client.Disconnect(0)
		return nil, fmt.Errorf("connect to MQTT broker %s: %w", o.BrokerURL, err)
	}
	if o.Exclusive {
		ls, ok := s.Shared()
		if !ok {
			p.client.Disconnect(0)
			return nil, errors.New("an exclusive jobs MQTT plane needs a store with a leader's lease (PostgreSQL: --postgres-url)")
		}
		p.workers.Add(1)
		go p.lead(ls, subs, o.BrokerURL)
	}
	p.start()
	return p, nil
}

// start starts the workers and the notifier.
func (p *Plane) start() {
	p.workers.Add(planeWorkers + 1)
	for range planeWorkers {
		go p.serve()
	}
	go p.notifier()
	p.svc.OnQueueChange(listener{p})
}

// listener is how the service tells the plane of changes to pending jobs.
type listener struct{ p *Plane }

func (l listener) Changed(things []string)         { l.p.changed(things) }
func (l listener) Started(thing, execution string) { l.p.started(thing, execution) }

// UseInline subscribes the plane on an in-process broker and publishes through it from then
// on: at Serve, and again when the embedded broker was restarted (a new broker holds none of
// the old one's subscriptions).
func (p *Plane) UseInline(b Inline) error {
	for filter := range p.subs {
		if err := b.InlineSubscribe(filter, p.handle); err != nil {
			return fmt.Errorf("subscribe to %s on the embedded broker: %w", filter, err)
		}
	}
	p.inline.Store(&b)
	return nil
}

// Inline reports whether the plane uses its broker in process (Options.Inline).
func (p *Plane) Inline() bool { return p.inline.Load() != nil }

// subscribe (re)subscribes after every connect. A plane connected but not subscribed is deaf,
// so a failed subscription is retried for as long as the connection lasts.
func (p *Plane) subscribe(c paho.Client, subs map[string]byte, broker string) {
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		tok := c.SubscribeMultiple(subs, func(_ paho.Client, m paho.Message) { p.handle(m.Topic(), m.Payload()) })
		if !tok.WaitTimeout(10 * time.Second) {
			p.log.Error().Msg("subscribe to jobs topics: no SUBACK within 10s; retrying")
		} else if err := tok.Error(); err != nil {
			p.log.Error().Err(err).Msg("subscribe to jobs topics failed; retrying")
		} else if refused := refusedFilters(tok.(*paho.SubscribeToken).Result()); len(refused) > 0 {
			p.log.Error().Strs("filters", refused).Msg("the broker refused the jobs topics (check its ACL for the service's user); retrying")
		} else {
			p.log.Info().Str("broker", broker).Msg("jobs MQTT plane connected")
			return
		}
		select {
		case <-p.done:
			return
		case <-time.After(wait):
		}
		if !c.IsConnectionOpen() {
			return // the next connect subscribes again
		}
	}
}

// lead serves device requests while this replica holds the leader's lease, and waits for it
// otherwise.
func (p *Plane) lead(ls store.Shared, subs map[string]byte, broker string) {
	defer p.workers.Done()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-p.done; cancel() }()
	for {
		lost, release, err := ls.Lead(ctx)
		if err != nil {
			return // closing
		}
		p.leading.Store(true)
		p.log.Info().Msg("this replica now serves device requests (leader)")
		if p.client.IsConnectionOpen() {
			p.subscribe(p.client, subs, broker)
		}
		select {
		case <-p.done:
			release()
			return
		case <-lost:
		}
		p.leading.Store(false)
		p.client.Unsubscribe(slices.Collect(maps.Keys(subs))...).WaitTimeout(5 * time.Second)
		release()
		p.log.Warn().Msg("stepped down: the leader's lease could not be renewed in time (the database is unreachable, or this replica stalled); another replica serves device requests; waiting to lead again")
	}
}

// refusedFilters are the filters a SUBACK refused (return code 0x80).
func refusedFilters(granted map[string]byte) []string {
	var out []string
	for f, qos := range granted {
		if qos == 0x80 {
			out = append(out, f)
		}
	}
	slices.Sort(out)
	return out
}

// Leading reports whether this replica serves device requests: always without Exclusive, and
// while it holds the leader's lease with it.
func (p *Plane) Leading() bool { return !p.exclusive || p.leading.Load() }

// Close disconnects from the broker and stops serving.
func (p *Plane) Close() {
	p.closing.Do(func() {
		close(p.done)
		if p.client != nil {
			p.client.Disconnect(250)
		}
		p.workers.Wait()
	})
}

func (p *Plane) toExecution(e *store.Execution, j *store.Job, withDoc bool) *iotjobs.JobExecution {
	return p.svc.DeviceExecution(e, j, withDoc)
}

// decode reads a request's payload; an empty payload is an empty request.
func decode(payload []byte, v any) error {
	if len(payload) == 0 {
		return nil
	}
	if err := json.Unmarshal(payload, v); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			// Well-formed JSON with a member of the wrong type (say a number in statusDetails):
			// AWS calls that an invalid request, not invalid JSON.
			return localiot.Errorf(iotjobs.CodeInvalidRequest, "%s must be of type %s: %v", cmp.Or(typeErr.Field, "the payload"), typeErr.Type, err)
		}
		return localiot.Errorf(iotjobs.CodeInvalidJSON, "payload is not valid JSON for this request: %v", err)
	}
	return nil
}

// handle queues a device request for the workers: a thing with perThingQueued requests
// already waiting, or one that finds the queue full, is told RequestThrottled. It never blocks
// paho's router; on the embedded broker it runs in the device's own connection, which waits
// for room a while (as its TCP connection would) before the device is told.
func (p *Plane) handle(topic string, payload []byte) {
	if strings.HasPrefix(topic, localiot.PresencePrefix) {
		p.svc.Presence(payload)
		return
	}
	if p.exclusive && !p.leading.Load() {
		return // delivered after this replica stepped down: the leader answers it
	}
	req := planeRequest{topic: topic, payload: payload}
	if thing, name, op, ok := localiot.ParseShadowTopic(topic); ok {
		req.r.Thing, req.shadow, req.shadowOp = thing, name, op
	} else if r, ok := iotjobs.ParseRequestTopic(topic); ok {
		req.r = r
	} else {
		return
	}
	r := req.r
	p.mu.Lock()
	full := p.queued[r.Thing] >= perThingQueued
	if !full {
		p.queued[r.Thing]++
	}
	p.mu.Unlock()
	if !full && !p.enqueue(req) {
		full = true
		p.mu.Lock()
		p.unqueued(r.Thing)
		p.mu.Unlock()
	}
	if full {
		var tok iotjobs.Token
		json.Unmarshal(payload, &tok)
		p.tryPublish(iotjobs.Rejected(topic), &iotjobs.ErrorReply{Code: iotjobs.CodeRequestThrottled,
			Message: "too many requests from this thing at once; retry shortly", Timestamp: p.svc.Clock().Unix(), Token: tok})
	}
}

// enqueue hands req to the workers if there is room, or (inline, on the device's own
// connection) once there is within publishWait.
func (p *Plane) enqueue(req planeRequest) bool {
	select {
	case p.requests <- req:
		return true
	default:
	}
	if !p.Inline() {
		return false
	}
	t := time.NewTimer(publishWait)
	defer t.Stop()
	select {
	case p.requests <- req:
		return true
	case <-t.C:
	case <-p.done:
	}
	return false
}

// unqueued counts one request of thing off the queue (p.mu held).
func (p *Plane) unqueued(thing string) {
	if p.queued[thing]--; p.queued[thing] <= 0 {
		delete(p.queued, thing)
	}
}

func (p *Plane) serve() {
	defer p.workers.Done()
	for {
		select {
		case <-p.done:
			return
		case req := <-p.requests:
			p.mu.Lock()
			p.unqueued(req.r.Thing)
			p.mu.Unlock()
			if p.exclusive && !p.leading.Load() {
				continue // queued before this replica stepped down; the device asks the leader again
			}
			if req.shadowOp != "" {
				p.serveShadow(req)
				continue
			}
			p.serveOne(req.topic, req.r, req.payload)
		}
	}
}

func (p *Plane) serveOne(topic string, r iotjobs.Request, payload []byte) {
	p.svc.Counter("mqtt " + r.Op.String()).Add(1)
	// The client token is read on its own first, so that a request whose other members do not
	// decode is still rejected with its token.
	var tok iotjobs.Token
	json.Unmarshal(payload, &tok)
	now := p.svc.Clock().Unix()
	if err := p.svc.CheckClientToken(tok.ClientToken); err != nil {
		p.reject(topic, tok.ClientToken, err)
		return
	}
	reply, err := p.answer(topic, r, payload, now)
	if err != nil {
		p.reject(topic, tok.ClientToken, err)
		return
	}
	reply.SetClientToken(tok.ClientToken)
	p.publish(iotjobs.Accepted(topic), reply)
}

// serveShadow answers a named shadow's update or get with its accepted or rejected reply (the
// Device Shadow service's error document: code, message, timestamp, clientToken).
func (p *Plane) serveShadow(req planeRequest) {
	p.svc.Counter("mqtt shadow " + req.shadowOp).Add(1)
	var tok iotjobs.Token
	json.Unmarshal(req.payload, &tok)
	var doc map[string]any
	var err error
	switch req.shadowOp {
	case "update":
		doc, err = p.svc.UpdateShadow(req.r.Thing, req.shadow, req.payload)
	case "delete":
		doc, err = p.svc.DeleteShadow(req.r.Thing, req.shadow)
	default:
		doc, err = p.svc.GetShadow(req.r.Thing, req.shadow)
	}
	if err == nil && req.shadowOp != "update" && tok.ClientToken != "" {
		doc["clientToken"] = tok.ClientToken
	}
	if err != nil {
		if p.notLeading(req.topic, err) {
			return
		}
		var e *localiot.Error
		if !errors.As(err, &e) {
			p.log.Error().Err(err).Str("topic", req.topic).Msg("shadow request failed")
			e = &localiot.Error{Code: localiot.CodeInternal, Message: "internal error; see the jobs service log"}
		}
		status := 400
		switch e.Code {
		case localiot.CodeResourceNotFound:
			status = 404
		case localiot.CodeConflict:
			status = 409
		case localiot.CodeLimitExceeded:
			status = 413
		case localiot.CodeInternal:
			status = 500
		}
		out := map[string]any{"code": status, "message": e.Message, "timestamp": p.svc.Clock().Unix()}
		if tok.ClientToken != "" {
			out["clientToken"] = tok.ClientToken
		}
		p.publish(req.topic+"/rejected", out)
		return
	}
	p.publish(req.topic+"/accepted", doc)
}

// answer serves one request.
func (p *Plane) answer(topic string, r iotjobs.Request, payload []byte, now int64) (iotjobs.Message, error) {
	switch r.Op {
	case iotjobs.OpStartNext:
		var req iotjobs.StartNextRequest
		if err := decode(payload, &req); err != nil {
			return nil, err
		}
		e, j, err := p.svc.StartNext(r.Thing, req.StatusDetails, time.Duration(req.StepTimeoutInMinutes)*time.Minute)
		if err != nil {
			return nil, err
		}
		out := &iotjobs.ExecutionReply{Timestamp: now}
		if e != nil {
			out.Execution = p.toExecution(e, j, true)
		}
		return out, nil
	case iotjobs.OpGetPending:
		var req iotjobs.GetPendingRequest
		if err := decode(payload, &req); err != nil {
			return nil, err
		}
		inProgress, queued, err := p.svc.PendingExecutions(r.Thing, localiot.MaxPendingListed)
		if err != nil {
			return nil, err
		}
		return &iotjobs.GetPendingReply{InProgressJobs: localiot.ToSummaries(inProgress), QueuedJobs: localiot.ToSummaries(queued), Timestamp: now}, nil
	case iotjobs.OpDescribe:
		var req iotjobs.DescribeRequest
		if err := decode(payload, &req); err != nil {
			return nil, err
		}
		var number []int64
		if req.ExecutionNumber != 0 {
			number = append(number, req.ExecutionNumber)
		}
		e, j, err := p.svc.DeviceDescribe(r.Thing, r.JobID, number...)
		if err != nil {
			return nil, err
		}
		out := &iotjobs.ExecutionReply{Timestamp: now}
		if e != nil {
			out.Execution = p.toExecution(e, j, req.IncludeJobDocument == nil || *req.IncludeJobDocument)
		}
		return out, nil
	case iotjobs.OpUpdate:
		var req iotjobs.UpdateRequest
		if err := decode(payload, &req); err != nil {
			return nil, err
		}
		e, j, err := p.svc.UpdateExecution(localiot.UpdateInput{
			Thing: r.Thing, JobID: r.JobID, Status: req.Status, StatusDetails: req.StatusDetails,
			ExpectedVersion: req.ExpectedVersion, ExecutionNumber: req.ExecutionNumber,
			StepTimeout: time.Duration(req.StepTimeoutInMinutes) * time.Minute,
		})
		if err != nil {
			return nil, err
		}
		out := &iotjobs.UpdateReply{Timestamp: now}
		if req.IncludeJobExecutionState {
			out.ExecutionState = localiot.ExecutionState(e)
		}
		if req.IncludeJobDocument {
			out.JobDocument = json.RawMessage(p.svc.DocumentFor(j))
		}
		return out, nil
	}
	return nil, localiot.Errorf(iotjobs.CodeInvalidTopic, "%s", iotjobs.InvalidTopicMessage(topic))
}

func (p *Plane) reject(topic, clientToken string, err error) {
	if p.notLeading(topic, err) {
		return
	}
	var e *localiot.Error
	if !errors.As(err, &e) {
		p.log.Error().Err(err).Str("topic", topic).Msg("jobs request failed")
		e = &localiot.Error{Code: localiot.CodeInternal, Message: "internal error; see the jobs service log"}
	}
	code := e.Code
	if code == localiot.CodeAlreadyExists || code == localiot.CodeConflict || code == localiot.CodeUnauthorized {
		code = localiot.CodeInvalidRequest
	}
	out := &iotjobs.ErrorReply{Code: code, Message: e.Message, Timestamp: p.svc.Clock().Unix()}
	out.ClientToken = clientToken
	if e.State != nil {
		out.ExecutionState = localiot.ExecutionState(e.State)
	}
	p.publish(iotjobs.Rejected(topic), out)
}

// notLeading reports whether err says this replica lost the leader's lease while serving a
// request (the store's fence refused its write). Such a request gets no answer: the device
// asks again, and the replica that leads now answers.
func (p *Plane) notLeading(topic string, err error) bool {
	if !errors.Is(err, store.ErrNotLeader) {
		return false
	}
	p.log.Info().Str("topic", topic).Msg("request left unanswered: this replica lost the leader's lease before its write committed")
	return true
}

// publish sends a reply or notification at QoS 1 once fewer than maxInflight publishes await
// their PUBACK; it drops the message after publishWait without room (the device asks again).
func (p *Plane) publish(topic string, v any) {
	raw, err := json.Marshal(v)
	if err != nil {
		p.log.Error().Err(err).Str("topic", topic).Msg("encode reply")
		return
	}
	t := time.NewTimer(publishWait)
	defer t.Stop()
	select {
	case p.inflight <- struct{}{}:
	case <-p.done:
		return
	case <-t.C:
		p.log.Warn().Str("topic", topic).Msg("broker is not acknowledging publishes; reply dropped (the device will ask again)")
		return
	}
	p.send(topic, raw)
}

// tryPublish publishes only if there is room now: for replies to requests that were refused
// for load, which must not add to it.
func (p *Plane) tryPublish(topic string, v any) {
	raw, err := json.Marshal(v)
	if err != nil {
		return
	}
	select {
	case p.inflight <- struct{}{}:
		p.send(topic, raw)
	default:
	}
}

func (p *Plane) send(topic string, raw []byte) {
	if in := p.inline.Load(); in != nil {
		if err := (*in).InlinePublish(topic, raw); err != nil {
			p.log.Debug().Err(err).Str("topic", topic).Msg("publish on the embedded broker")
		}
		<-p.inflight
		return
	}
	tok := p.client.Publish(topic, 1, false, raw)
	go func() {
		tok.Wait()
		<-p.inflight
	}()
}

// changed records that things' pending jobs changed; the notifier tells them. Changes that
// arrive while it works are coalesced, so a burst of jobs for one thing costs one notice.
func (p *Plane) changed(things []string) {
	p.mu.Lock()
	for _, t := range things {
		p.dirty[t] = struct{}{}
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// started records that thing's QUEUED execution started. When the thing was last told that
// this execution is its next one, and no other change to it is waiting or being told, it is
// still the next one with the same pending list: nothing to tell, and nothing to read. (That
// told state came from a read after every change before this one, so the execution was the
// next one when it started.) Otherwise it is a change like any other.
func (p *Plane) started(thing, execution string) {
	p.mu.Lock()
	_, waiting := p.dirty[thing]
	_, telling := p.telling[thing]
	if !waiting && !telling {
		if prev, ok := p.told.Load(thing); ok && prev.(notified).next == execution {
			p.mu.Unlock()
			return
		}
	}
	p.mu.Unlock()
	p.changed([]string{thing})
}

// notifyWorkers tell things in parallel: a wave of CreateJob touches many things at once.
const notifyWorkers = 4

func (p *Plane) notifier() {
	defer p.workers.Done()
	for {
		select {
		case <-p.done:
			return
		case <-p.wake:
		}
		p.mu.Lock()
		batch := make([]string, 0, len(p.dirty))
		for t := range p.dirty {
			batch = append(batch, t)
		}
		p.telling, p.dirty = p.dirty, map[string]struct{}{}
		p.mu.Unlock()
		var wg sync.WaitGroup
		for w := range min(notifyWorkers, len(batch)) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < len(batch); i += notifyWorkers {
					p.notifyThing(batch[i])
				}
			}()
		}
		wg.Wait()
		p.mu.Lock()
		p.telling = nil
		p.mu.Unlock()
	}
}

// notifyThing tells a thing what is now pending for it: notify-next with its next execution
// (or none) when that changed, and notify with the summary lists (at most ten, as AWS) when
// an execution joined or left them.
func (p *Plane) notifyThing(thing string) {
	prev, known := p.told.Load(thing)
	was, _ := prev.(notified)
	// A retry's new execution of the same job is news too (ExecutionKey tells them apart).
	announced := func(e *store.Execution) bool { return known && was.next == localiot.ExecutionKey(e) }
	// One read for both notices; the job (its document) only for a next execution not yet
	// announced.
	pend, err := p.svc.Pending(thing, localiot.MaxPendingListed, func(e *store.Execution) bool { return !announced(e) })
	if err != nil {
		p.log.Error().Err(err).Str("thing", thing).Msg("read pending executions for notify-next and notify")
		return
	}
	// An execution that starts stays in the pending list: AWS sends notify when one is added
	// to or removed from it, not when one starts.
	now := p.svc.Clock().Unix()
	is := notified{next: localiot.ExecutionKey(pend.Next), list: strings.Join(pend.Members, " ")}
	if known && is == was {
		return
	}
	p.told.Store(thing, is)
	if !announced(pend.Next) {
		out := iotjobs.NotifyNext{Timestamp: now}
		if pend.Next != nil {
			out.Execution = p.toExecution(pend.Next, pend.Job, true)
		}
		p.publish(iotjobs.Topic(thing, iotjobs.SuffixNotifyNext), out)
	}
	if known && is.list == was.list {
		return
	}
	jobs := map[iotjobs.Status][]iotjobs.JobExecutionSummary{}
	if len(pend.InProgress) > 0 {
		jobs[store.ExecInProgress] = localiot.ToSummaries(pend.InProgress)
	}
	if len(pend.Queued) > 0 {
		jobs[store.ExecQueued] = localiot.ToSummaries(pend.Queued)
	}
	p.publish(iotjobs.Topic(thing, iotjobs.SuffixNotify), iotjobs.Notify{Timestamp: now, Jobs: jobs})
}

// notified is what a thing was last told: its next execution and its pending list, each as
// ExecutionKeys.
type notified struct{ next, list string }
