package agent

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/otaflow/otaflow/internal/iotjobs"
)

// JobsAPI is how the state machine talks to the jobs service: the device side of the AWS IoT
// Jobs API, as a few calls (like mender's Controller). The state machine decides what to
// report; the implementation decides how it travels. mqttJobs sends it over the MQTT Jobs
// topics with client tokens and resends (Agent.request); a test can put a fake in its place
// and drive the state machine without a broker.
type JobsAPI interface {
	// GetPending lists the thing's in-progress and queued executions.
	GetPending(ctx context.Context) (*iotjobs.GetPendingReply, error)
	// Describe is one execution with its job document; nil when the service has none.
	Describe(ctx context.Context, jobID string) (*iotjobs.JobExecution, error)
	// Update changes an execution's status. A rejection is an *iotjobs.ErrorReply. The reply
	// carries the execution's state when the request asked for it (IncludeJobExecutionState).
	Update(ctx context.Context, jobID string, u *iotjobs.UpdateRequest) (*iotjobs.UpdateReply, error)
}

// mqttJobs is JobsAPI over the agent's MQTT connection (Agent.request). It holds the function,
// not the agent: an *Agent inside a value converted to an interface would make the linker
// keep every method of the agent's field types (130 KB more binary, measured).
type mqttJobs struct {
	request func(ctx context.Context, suffix string, msg iotjobs.Message) ([]byte, error)
}

func (m mqttJobs) GetPending(ctx context.Context) (*iotjobs.GetPendingReply, error) {
	raw, err := m.request(ctx, iotjobs.SuffixGetPending, &iotjobs.GetPendingRequest{})
	if err != nil {
		return nil, err
	}
	var out iotjobs.GetPendingReply
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("get reply: %w", err)
	}
	return &out, nil
}

func (m mqttJobs) Describe(ctx context.Context, jobID string) (*iotjobs.JobExecution, error) {
	include := true
	raw, err := m.request(ctx, iotjobs.DescribeSuffix(jobID), &iotjobs.DescribeRequest{IncludeJobDocument: &include})
	if err != nil {
		return nil, err
	}
	var out iotjobs.ExecutionReply
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, nil // an unreadable reply is skipped like a missing execution
	}
	return out.Execution, nil
}

func (m mqttJobs) Update(ctx context.Context, jobID string, u *iotjobs.UpdateRequest) (*iotjobs.UpdateReply, error) {
	raw, err := m.request(ctx, iotjobs.UpdateSuffix(jobID), u)
	if err != nil {
		return nil, err
	}
	var out iotjobs.UpdateReply
	if u.IncludeJobExecutionState {
		json.Unmarshal(raw, &out) // the reply's state is optional: an empty one is fine
	}
	return &out, nil
}
