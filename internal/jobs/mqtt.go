package jobs

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/otaflow/otaflow/internal/iotjobs"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"
)

// MQTTOptions configure the device-facing plane.
type MQTTOptions struct {
	// BrokerURL is the broker to connect to, e.g. tcp://127.0.0.1:1883.
	BrokerURL string
	// ClientID, Username and Password identify the service to the broker, which lets it (and
	// only it) use every thing's $aws/things/+/jobs topics.
	ClientID string
	Username string
	Password string
	Logger   zerolog.Logger
}

// MQTTPlane serves the AWS IoT Jobs MQTT API for devices over any MQTT broker.
type MQTTPlane struct {
	svc    *Service
	client paho.Client
	log    zerolog.Logger
	// lastNext is the job each thing was last told is next, so notify-next goes out only when
	// that changes, as AWS does. Lost on restart, which costs at most one repeated notice.
	lastNext sync.Map
}

// ServeMQTT connects the service to the broker and answers the Jobs topics until Close.
func (s *Service) ServeMQTT(o MQTTOptions) (*MQTTPlane, error) {
	p := &MQTTPlane{svc: s, log: o.Logger}
	if o.ClientID == "" {
		o.ClientID = "otaflow-jobs-service"
	}
	subs := map[string]byte{
		iotjobs.Topic("+", iotjobs.SuffixStartNext):     1,
		iotjobs.Topic("+", iotjobs.SuffixGetPending):    1,
		iotjobs.Topic("+", iotjobs.DescribeSuffix("+")): 1,
		iotjobs.Topic("+", iotjobs.UpdateSuffix("+")):   1,
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
		SetOrderMatters(false).
		SetOnConnectHandler(func(c paho.Client) {
			tok := c.SubscribeMultiple(subs, p.handle)
			if tok.WaitTimeout(10*time.Second) && tok.Error() != nil {
				p.log.Error().Err(tok.Error()).Msg("subscribe to jobs topics failed")
				return
			}
			p.log.Info().Str("broker", o.BrokerURL).Msg("jobs MQTT plane connected")
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
	s.OnQueueChange(p.notify)
	return p, nil
}

// Close disconnects from the broker.
func (p *MQTTPlane) Close() { p.client.Disconnect(250) }

func epoch(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

func (p *MQTTPlane) toExecution(e *Execution, j *Job, withDoc bool) *iotjobs.JobExecution {
	out := &iotjobs.JobExecution{
		JobID: e.JobID, ThingName: e.ThingName, Status: e.Status, StatusDetails: e.StatusDetails,
		QueuedAt: epoch(e.QueuedAt), StartedAt: epoch(e.StartedAt), LastUpdatedAt: epoch(e.LastUpdatedAt),
		VersionNumber: e.VersionNumber, ExecutionNumber: e.ExecutionNumber,
	}
	if withDoc && j != nil {
		out.JobDocument = json.RawMessage(p.svc.documentFor(j))
	}
	return out
}

func executionState(e *Execution) *iotjobs.ExecutionState {
	return &iotjobs.ExecutionState{Status: e.Status, StatusDetails: e.StatusDetails, VersionNumber: e.VersionNumber}
}

func toSummaries(es []*Execution) []iotjobs.JobExecutionSummary {
	out := make([]iotjobs.JobExecutionSummary, 0, len(es))
	for _, e := range es {
		out = append(out, iotjobs.JobExecutionSummary{JobID: e.JobID, QueuedAt: epoch(e.QueuedAt), StartedAt: epoch(e.StartedAt),
			LastUpdatedAt: epoch(e.LastUpdatedAt), VersionNumber: e.VersionNumber, ExecutionNumber: e.ExecutionNumber})
	}
	return out
}

// decode reads a request's payload; an empty payload is an empty request.
func decode(payload []byte, v any) error {
	if len(payload) == 0 {
		return nil
	}
	if err := json.Unmarshal(payload, v); err != nil {
		return errorf(iotjobs.CodeInvalidJSON, "payload is not valid JSON for this request: %v", err)
	}
	return nil
}

func (p *MQTTPlane) handle(_ paho.Client, m paho.Message) {
	topic := m.Topic()
	r, ok := iotjobs.ParseRequestTopic(topic)
	if !ok {
		return
	}
	// The client token is read on its own first, so that a request whose other members do not
	// decode is still rejected with its token.
	var tok iotjobs.Token
	json.Unmarshal(m.Payload(), &tok)
	now := p.svc.clock().Unix()
	reply, err := p.answer(topic, r, m.Payload(), now)
	if err != nil {
		p.reject(topic, tok.ClientToken, err)
		return
	}
	reply.SetClientToken(tok.ClientToken)
	p.publish(iotjobs.Accepted(topic), reply)
}

// answer serves one request.
func (p *MQTTPlane) answer(topic string, r iotjobs.Request, payload []byte, now int64) (iotjobs.Message, error) {
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
		inProgress, queued, err := p.svc.PendingExecutions(r.Thing)
		if err != nil {
			return nil, err
		}
		return &iotjobs.GetPendingReply{InProgressJobs: toSummaries(inProgress), QueuedJobs: toSummaries(queued), Timestamp: now}, nil
	case iotjobs.OpDescribe:
		var req iotjobs.DescribeRequest
		if err := decode(payload, &req); err != nil {
			return nil, err
		}
		var e *Execution
		var j *Job
		var err error
		if r.JobID == iotjobs.NextJobID {
			e, j, err = p.svc.NextExecution(r.Thing)
		} else {
			e, err = p.svc.DescribeJobExecution(r.JobID, r.Thing, req.ExecutionNumber)
			if err == nil {
				j, err = p.svc.jobWithoutTargets(r.JobID)
			}
		}
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
		e, j, err := p.svc.UpdateExecution(UpdateInput{
			Thing: r.Thing, JobID: r.JobID, Status: req.Status, StatusDetails: req.StatusDetails,
			ExpectedVersion: req.ExpectedVersion, ExecutionNumber: req.ExecutionNumber,
			StepTimeout: time.Duration(req.StepTimeoutInMinutes) * time.Minute,
		})
		if err != nil {
			return nil, err
		}
		out := &iotjobs.UpdateReply{Timestamp: now}
		if req.IncludeJobExecutionState {
			out.ExecutionState = executionState(e)
		}
		if req.IncludeJobDocument {
			out.JobDocument = json.RawMessage(p.svc.documentFor(j))
		}
		return out, nil
	}
	return nil, errorf(iotjobs.CodeInvalidTopic, "%s is not a Jobs API topic", topic)
}

func (p *MQTTPlane) reject(topic, clientToken string, err error) {
	var e *Error
	if !errors.As(err, &e) {
		p.log.Error().Err(err).Str("topic", topic).Msg("jobs request failed")
		e = &Error{Code: CodeInternal, Message: "internal error; see the jobs service log"}
	}
	code := e.Code
	if code == CodeAlreadyExists || code == CodeConflict || code == CodeUnauthorized {
		code = CodeInvalidRequest
	}
	out := &iotjobs.ErrorReply{Code: code, Message: e.Message, Timestamp: p.svc.clock().Unix()}
	out.ClientToken = clientToken
	if e.State != nil {
		out.ExecutionState = executionState(e.State)
	}
	p.publish(iotjobs.Rejected(topic), out)
}

func (p *MQTTPlane) publish(topic string, v any) {
	raw, err := json.Marshal(v)
	if err != nil {
		p.log.Error().Err(err).Str("topic", topic).Msg("encode reply")
		return
	}
	p.client.Publish(topic, 1, false, raw)
}

// notify tells each thing what is now pending for it: notify-next with its next execution
// (or none), and notify with the summary lists.
func (p *MQTTPlane) notify(things []string) {
	for _, thing := range things {
		e, j, err := p.svc.NextExecution(thing)
		if err != nil {
			p.log.Error().Err(err).Str("thing", thing).Msg("read next execution for notify-next")
			continue
		}
		now := p.svc.clock().Unix()
		next := ""
		if e != nil {
			next = e.JobID
		}
		if prev, ok := p.lastNext.Swap(thing, next); !ok || prev.(string) != next {
			out := iotjobs.NotifyNext{Timestamp: now}
			if e != nil {
				out.Execution = p.toExecution(e, j, true)
			}
			p.publish(iotjobs.Topic(thing, iotjobs.SuffixNotifyNext), out)
		}

		inProgress, queued, err := p.svc.PendingExecutions(thing)
		if err != nil {
			continue
		}
		jobs := map[iotjobs.Status][]iotjobs.JobExecutionSummary{}
		if len(inProgress) > 0 {
			jobs[ExecInProgress] = toSummaries(inProgress)
		}
		if len(queued) > 0 {
			jobs[ExecQueued] = toSummaries(queued)
		}
		p.publish(iotjobs.Topic(thing, iotjobs.SuffixNotify), iotjobs.Notify{Timestamp: now, Jobs: jobs})
	}
}
