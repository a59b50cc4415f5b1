// Package rolloutapi serves rollouts through the jobs service's REST API: starting one
// (POST /rollouts) and steering it (POST /rollouts/ID/ACTION), signed with an access key like
// every other call. The key's role decides (operate), the audit log records who did what, and
// the rollout's history names them (StartedBy, the updates' By), so the CLI and scripts steer
// with an identity the service has checked, not one they claim to Temporal.
package rolloutapi

import (
	"errors"
	"net/http"

	"go.temporal.io/sdk/client"

	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/localiot/rest"
	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/workflows/contract"
)

// Routes are the rollout operations, for rest.Handler.
func Routes(c client.Client, taskQueue string) []rest.Route {
	return []rest.Route{
		{Pattern: "POST /rollouts", Action: "StartRollout", Handler: rest.Op(func(r *http.Request) (any, error) { return start(r, c, taskQueue) })},
		{Pattern: "POST /rollouts/{rolloutId}/{action}", Action: "rollout.{action}", Handler: rest.Op(func(r *http.Request) (any, error) { return steer(r, c, taskQueue) }),
			// A key limited to thing groups steers only rollouts of its groups' devices.
			Targets: func(r *http.Request) ([]string, error) {
				t, err := rolloutclient.Targets(r.Context(), c, r.PathValue("rolloutId"))
				if errors.Is(err, rolloutclient.ErrNoRollout) {
					return nil, localiot.Errorf(localiot.CodeResourceNotFound, "%s", err)
				}
				return t, err
			}},
	}
}

// Started is StartRollout's answer.
type Started struct {
	RolloutID  string `json:"rolloutId"`
	WorkflowID string `json:"workflowId"`
	RunID      string `json:"runId"`
	StartedBy  string `json:"startedBy"`
}

func who(r *http.Request) string {
	p, _ := localiot.PrincipalFrom(r.Context())
	return p.Name
}

func start(r *http.Request, c client.Client, taskQueue string) (any, error) {
	var req contract.RolloutRequest
	if err := rest.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	// Who started it is who signed, whatever the body says.
	req.StartedBy = who(r)
	if err := req.Validate(); err != nil {
		return nil, localiot.Errorf(localiot.CodeInvalidRequest, "%s", err)
	}
	run, err := rolloutclient.Start(r.Context(), c, taskQueue, req)
	switch {
	case errors.Is(err, rolloutclient.ErrTokenReused):
		return nil, localiot.Errorf(localiot.CodeInvalidRequest, "%s", err)
	case err != nil:
		return nil, localiot.Errorf(localiot.CodeInvalidRequest, "%s", rolloutclient.RootMessage(err))
	}
	return Started{RolloutID: req.RolloutID, WorkflowID: run.GetID(), RunID: run.GetRunID(), StartedBy: req.StartedBy}, nil
}

func steer(r *http.Request, c client.Client, taskQueue string) (any, error) {
	var body struct {
		Reason string `json:"reason"`
	}
	if err := rest.ReadJSON(r, &body); err != nil {
		return nil, err
	}
	out, err := rolloutclient.Steer(r.Context(), c, taskQueue, r.PathValue("rolloutId"), r.PathValue("action"), who(r), body.Reason)
	switch {
	case err == nil:
		return out, nil
	case errors.Is(err, rolloutclient.ErrNoRollout):
		return nil, localiot.Errorf(localiot.CodeResourceNotFound, "%s", err)
	case errors.Is(err, rolloutclient.ErrUnknownAction), errors.Is(err, rolloutclient.ErrNeedsReason):
		return nil, localiot.Errorf(localiot.CodeInvalidRequest, "%s", err)
	}
	return nil, localiot.Errorf(localiot.CodeResourceConflict, "%s", err)
}
