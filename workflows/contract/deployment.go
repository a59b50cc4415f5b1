package contract

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Continuous deployments (seed v2): one long-lived workflow per deployment keeps a thing
// group on a set of components (workflows.Deployment).

// DeploymentRequest describes a deployment to a thing group.
type DeploymentRequest struct {
	DeploymentID string `json:"deploymentId"`
	ThingGroup   string `json:"thingGroup"`
	// Components maps each component to a pinned version, or "" for the newest that fits.
	Components map[string]string `json:"components"`
	// SyncInterval is how often the group is checked for devices that joined (default 30 s).
	SyncInterval time.Duration `json:"syncInterval,omitempty"`
	// Revision counts revisions; carried across continue-as-new.
	Revision int `json:"revision,omitempty"`
}

// Validate checks the request without I/O (versions are resolved against the catalog later).
func (d *DeploymentRequest) Validate() error {
	var problems []string
	if d.DeploymentID == "" || !validID(d.DeploymentID) {
		problems = append(problems, fmt.Sprintf("deployment ID %q may only contain a-z A-Z 0-9 _ - (at most 56)", d.DeploymentID))
	}
	if d.ThingGroup == "" {
		problems = append(problems, "no thing group to deploy to")
	}
	if len(d.Components) == 0 {
		problems = append(problems, "the deployment names no components")
	}
	if d.SyncInterval == 0 {
		d.SyncInterval = 30 * time.Second
	}
	if d.Revision == 0 {
		d.Revision = 1
	}
	if len(problems) > 0 {
		return errors.New("invalid deployment: " + strings.Join(problems, "; "))
	}
	return nil
}

// SyncInput asks the SyncDeployment activity to bring a group's devices onto a revision.
type SyncInput struct {
	DeploymentID string            `json:"deploymentId"`
	ThingGroup   string            `json:"thingGroup"`
	Components   map[string]string `json:"components"`
	Revision     int               `json:"revision"`
}

// SyncResult is what one sync did (aggregates only: per-device state stays in the jobs service).
type SyncResult struct {
	Members  int               `json:"members"`
	Deployed int               `json:"deployed"` // devices that got a job in this sync
	JobID    string            `json:"jobId,omitempty"`
	Resolved map[string]string `json:"resolved,omitempty"`
}

// DeploymentStatus is the status query's answer.
type DeploymentStatus struct {
	DeploymentID string            `json:"deploymentId"`
	ThingGroup   string            `json:"thingGroup"`
	Revision     int               `json:"revision"`
	Components   map[string]string `json:"components"`
	Members      int               `json:"members"`
	LastResolved map[string]string `json:"lastResolved,omitempty"`
	Jobs         int               `json:"jobs"`
	LastError    string            `json:"lastError,omitempty"`
}
