package jobs

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

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

const topicPrefix = "$aws/things/"

// JobsTopic is the topic $aws/things/{thing}/jobs/{suffix}.
func JobsTopic(thing, suffix string) string { return topicPrefix + thing + "/jobs/" + suffix }

// ServeMQTT connects the service to the broker and answers the Jobs topics until Close.
func (s *Service) ServeMQTT(o MQTTOptions) (*MQTTPlane, error) {
	p := &MQTTPlane{svc: s, log: o.Logger}
	if o.ClientID == "" {
		o.ClientID = "otaflow-jobs-service"
	}
	subs := map[string]byte{
		topicPrefix + "+/jobs/start-next": 1,
		topicPrefix + "+/jobs/get":        1,
		topicPrefix + "+/jobs/+/get":      1,
		topicPrefix + "+/jobs/+/update":   1,
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

// executionJSON is a job execution as the MQTT Jobs API sends it.
type executionJSON struct {
	JobID           string            `json:"jobId"`
	ThingName       string            `json:"thingName"`
	JobDocument     json.RawMessage   `json:"jobDocument,omitempty"`
	Status          ExecutionStatus   `json:"status"`
	StatusDetails   map[string]string `json:"statusDetails,omitempty"`
	QueuedAt        int64             `json:"queuedAt"`
	StartedAt       int64             `json:"startedAt,omitempty"`
	LastUpdatedAt   int64             `json:"lastUpdatedAt"`
	VersionNumber   int64             `json:"versionNumber"`
	ExecutionNumber int64             `json:"executionNumber"`
}

func epoch(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

func (p *MQTTPlane) toExecutionJSON(e *Execution, j *Job, withDoc bool) *executionJSON {
	out := &executionJSON{
		JobID: e.JobID, ThingName: e.ThingName, Status: e.Status, StatusDetails: e.StatusDetails,
		QueuedAt: epoch(e.QueuedAt), StartedAt: epoch(e.StartedAt), LastUpdatedAt: epoch(e.LastUpdatedAt),
		VersionNumber: e.VersionNumber, ExecutionNumber: e.ExecutionNumber,
	}
	if withDoc && j != nil {
		out.JobDocument = json.RawMessage(p.svc.documentFor(j))
	}
	return out
}

type summaryJSON struct {
	JobID           string `json:"jobId"`
	QueuedAt        int64  `json:"queuedAt"`
	StartedAt       int64  `json:"startedAt,omitempty"`
	LastUpdatedAt   int64  `json:"lastUpdatedAt"`
	VersionNumber   int64  `json:"versionNumber"`
	ExecutionNumber int64  `json:"executionNumber"`
}

func toSummaries(es []*Execution) []summaryJSON {
	out := make([]summaryJSON, 0, len(es))
	for _, e := range es {
		out = append(out, summaryJSON{e.JobID, epoch(e.QueuedAt), epoch(e.StartedAt), epoch(e.LastUpdatedAt), e.VersionNumber, e.ExecutionNumber})
	}
	return out
}

// request is the union of the fields device requests carry.
type request struct {
	ClientToken              string            `json:"clientToken,omitempty"`
	Status                   ExecutionStatus   `json:"status"`
	StatusDetails            map[string]string `json:"statusDetails"`
	ExpectedVersion          int64             `json:"expectedVersion"`
	ExecutionNumber          int64             `json:"executionNumber"`
	IncludeJobExecutionState bool              `json:"includeJobExecutionState"`
	IncludeJobDocument       *bool             `json:"includeJobDocument"`
	StepTimeoutInMinutes     int64             `json:"stepTimeoutInMinutes"`
}

func (p *MQTTPlane) handle(_ paho.Client, m paho.Message) {
	topic := m.Topic()
	rest, ok := strings.CutPrefix(topic, topicPrefix)
	if !ok {
		return
	}
	thing, op, ok := strings.Cut(rest, "/jobs/")
	if !ok || thing == "" {
		return
	}
	var req request
	if err := json.Unmarshal(m.Payload(), &req); err != nil && len(m.Payload()) > 0 {
		p.reject(topic, "", errorf("InvalidJson", "payload is not valid JSON: %v", err))
		return
	}
	now := p.svc.clock().Unix()
	switch {
	case op == "start-next":
		e, j, err := p.svc.StartNext(thing, req.StatusDetails, time.Duration(req.StepTimeoutInMinutes)*time.Minute)
		if err != nil {
			p.reject(topic, req.ClientToken, err)
			return
		}
		out := map[string]any{"timestamp": now, "clientToken": req.ClientToken}
		if e != nil {
			out["execution"] = p.toExecutionJSON(e, j, true)
		}
		p.publish(topic+"/accepted", out)
	case op == "get":
		inProgress, queued, err := p.svc.PendingExecutions(thing)
		if err != nil {
			p.reject(topic, req.ClientToken, err)
			return
		}
		p.publish(topic+"/accepted", map[string]any{
			"inProgressJobs": toSummaries(inProgress), "queuedJobs": toSummaries(queued),
			"timestamp": now, "clientToken": req.ClientToken,
		})
	case strings.HasSuffix(op, "/get"):
		jobID := strings.TrimSuffix(op, "/get")
		var e *Execution
		var j *Job
		var err error
		if jobID == "$next" {
			e, j, err = p.svc.NextExecution(thing)
		} else {
			e, err = p.svc.DescribeJobExecution(jobID, thing, req.ExecutionNumber)
			if err == nil {
				j, err = p.svc.jobWithoutTargets(jobID)
			}
		}
		if err != nil {
			p.reject(topic, req.ClientToken, err)
			return
		}
		out := map[string]any{"timestamp": now, "clientToken": req.ClientToken}
		if e != nil {
			out["execution"] = p.toExecutionJSON(e, j, req.IncludeJobDocument == nil || *req.IncludeJobDocument)
		}
		p.publish(topic+"/accepted", out)
	case strings.HasSuffix(op, "/update"):
		jobID := strings.TrimSuffix(op, "/update")
		e, j, err := p.svc.UpdateExecution(UpdateInput{
			Thing: thing, JobID: jobID, Status: req.Status, StatusDetails: req.StatusDetails,
			ExpectedVersion: req.ExpectedVersion, ExecutionNumber: req.ExecutionNumber,
			StepTimeout: time.Duration(req.StepTimeoutInMinutes) * time.Minute,
		})
		if err != nil {
			p.reject(topic, req.ClientToken, err)
			return
		}
		out := map[string]any{"timestamp": now, "clientToken": req.ClientToken}
		if req.IncludeJobExecutionState {
			out["executionState"] = map[string]any{"status": e.Status, "statusDetails": e.StatusDetails, "versionNumber": e.VersionNumber}
		}
		if req.IncludeJobDocument != nil && *req.IncludeJobDocument {
			out["jobDocument"] = json.RawMessage(p.svc.documentFor(j))
		}
		p.publish(topic+"/accepted", out)
	default:
		p.reject(topic, req.ClientToken, errorf("InvalidTopic", "%s is not a Jobs API topic", topic))
	}
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
	out := map[string]any{"code": code, "message": e.Message, "timestamp": p.svc.clock().Unix()}
	if clientToken != "" {
		out["clientToken"] = clientToken
	}
	if e.State != nil {
		out["executionState"] = map[string]any{"status": e.State.Status, "statusDetails": e.State.StatusDetails, "versionNumber": e.State.VersionNumber}
	}
	p.publish(topic+"/rejected", out)
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
			out := map[string]any{"timestamp": now}
			if e != nil {
				out["execution"] = p.toExecutionJSON(e, j, true)
			}
			p.publish(JobsTopic(thing, "notify-next"), out)
		}

		inProgress, queued, err := p.svc.PendingExecutions(thing)
		if err != nil {
			continue
		}
		jobs := map[string][]summaryJSON{}
		if len(inProgress) > 0 {
			jobs["IN_PROGRESS"] = toSummaries(inProgress)
		}
		if len(queued) > 0 {
			jobs["QUEUED"] = toSummaries(queued)
		}
		p.publish(JobsTopic(thing, "notify"), map[string]any{"timestamp": now, "jobs": jobs})
	}
}
