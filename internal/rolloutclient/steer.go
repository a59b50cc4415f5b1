package rolloutclient

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.temporal.io/sdk/client"

	"github.com/otaflow/otaflow/workflows/contract"
)

// Steering actions, as the console's buttons and the jobs service's /rollouts/ID/ACTION name
// them.
const (
	ActionCancelRollback   = "cancel-rollback"
	ActionCancelNoRollback = "cancel-no-rollback"
	ActionRollback         = "rollback"
	// ActionRollbackAnyway rolls back even a rollout that later rollouts moved on.
	ActionRollbackAnyway = "rollback-anyway"
	ActionOverrideHealth = "override-health"
)

// ErrUnknownAction is an action Steer does not know; ErrNeedsReason one it takes only with a
// reason.
var (
	ErrUnknownAction = errors.New("unknown action: use pause, resume, approve, cancel, cancel-rollback, cancel-no-rollback, rollback, rollback-anyway or override-health")
	ErrNeedsReason   = errors.New("say why the breach may be ignored: it is recorded with the rollout")
)

// Steered is what a steering action did.
type Steered struct {
	Message string                  `json:"message"`
	Status  *contract.RolloutResult `json:"status,omitempty"`
	// RollbackWorkflow is the rollback's workflow, for ActionRollback; Later are the rollouts
	// started since the rolled-back one ended, whose devices may refuse it.
	RollbackWorkflow string   `json:"rollbackWorkflow,omitempty"`
	Later            []string `json:"later,omitempty"`
}

// LaterNote warns of the rollouts that may have moved a rolled-back rollout's devices on.
func (s Steered) LaterNote(rolloutID string) string {
	if len(s.Later) == 0 {
		return ""
	}
	return "note: rollouts started since " + rolloutID + " ended (" + strings.Join(s.Later, ", ") + ") target the same devices; those they moved on refuse the rollback (a device returns only to the version it ran just before)"
}

// Steer pauses, resumes, approves, cancels (with or without rollback), rolls back or overrides
// the health gate of a rollout on behalf of by (the console's user, the jobs service's access
// key), who is named in the rollout's history.
func Steer(ctx context.Context, c client.Client, taskQueue, rolloutID, action, by, reason string) (Steered, error) {
	var res contract.RolloutResult
	var err error
	steer := contract.SteerRequest{By: by, Reason: reason}
	switch action {
	case contract.UpdatePause, contract.UpdateResume, contract.UpdateApprove:
		res, err = Control(ctx, c, rolloutID, action, steer)
	case contract.UpdateCancel, ActionCancelRollback, ActionCancelNoRollback:
		req := contract.CancelRequest{Reason: reason, By: by}
		if req.Reason == "" {
			req.Reason = "no reason given"
		}
		if action != contract.UpdateCancel {
			rollback := action == ActionCancelRollback
			req.Rollback = &rollback
		}
		res, err = Control(ctx, c, rolloutID, contract.UpdateCancel, req)
	case ActionOverrideHealth:
		if strings.TrimSpace(reason) == "" {
			return Steered{}, ErrNeedsReason
		}
		res, err = Control(ctx, c, rolloutID, contract.UpdateOverrideHealth, contract.OverrideRequest{By: by, Reason: reason})
	case ActionRollback, ActionRollbackAnyway:
		why := reason
		if by != "" {
			why = strings.TrimSpace(reason + " (by " + by + ")")
		}
		st, err := StartRollback(ctx, c, taskQueue, rolloutID, why, action == ActionRollbackAnyway)
		if err != nil {
			return Steered{}, err
		}
		if st.Already {
			return Steered{Message: "rollback of " + rolloutID + " was already started (one per rollout): workflow " + st.Run.GetID(), RollbackWorkflow: st.Run.GetID()}, nil
		}
		return Steered{Message: "rollback of " + rolloutID + " started: workflow " + st.Run.GetID(), RollbackWorkflow: st.Run.GetID(), Later: st.Later}, nil
	default:
		return Steered{}, fmt.Errorf("%w (not %q)", ErrUnknownAction, action)
	}
	if err != nil {
		return Steered{}, err
	}
	return Steered{Message: action + ": done; rollout is " + res.State, Status: &res}, nil
}

// Targets are what a rollout targets (thing and thing-group ARNs, or thing names), as its
// request named them: what a principal limited to thing groups must cover to steer it.
func Targets(ctx context.Context, c client.Client, rolloutID string) ([]string, error) {
	wid, err := WorkflowID(ctx, c, rolloutID)
	if err != nil {
		return nil, err
	}
	req, err := Request(ctx, c, wid)
	return req.Targets, err
}
