package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"go.temporal.io/api/workflowservice/v1"

	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/internal/rolloutops"
	"github.com/otaflow/otaflow/workflows/contract"
)

// Releases and deployments: what can be rolled out (the releases signed in the release
// repository, with how many devices run each) and the v2 deployments that keep thing groups on
// their components.

// Release is one published release.
type Release struct {
	Bucket   string `json:"bucket"`
	Software string `json:"software"`
	Version  string `json:"version"`
	// Devices run it (from the fleet index; -1 when it cannot be told).
	Devices int `json:"devices"`
}

func (c *Console) handleReleases(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
	defer cancel()
	if c.o.ReleaseMetadataURL == nil || len(c.o.ReleaseBuckets) == 0 {
		writeJSON(w, http.StatusOK, map[string]any{"releases": []Release{}, "note": "this console was not told where releases are published"})
		return
	}
	sum, err := c.summary(ctx)
	if err != nil {
		sum = nil // counts unknown without the fleet index
	}
	out := []Release{}
	var problems []string
	for _, b := range c.o.ReleaseBuckets {
		for _, sw := range softwares {
			versions, err := rolloutops.PublishedVersions(ctx, c.o.ReleaseMetadataURL(b), sw)
			if errors.Is(err, rolloutops.ErrNothingPublished) {
				break // nothing in this bucket at all
			}
			if err != nil {
				problems = append(problems, err.Error())
				continue
			}
			for i := len(versions) - 1; i >= 0; i-- { // newest first
				rel := Release{Bucket: b, Software: sw, Version: versions[i], Devices: -1}
				if sum != nil {
					rel.Devices = sum.Versions[sw][strings.ToLower(versions[i])]
				}
				out = append(out, rel)
			}
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"releases": out, "problems": problems})
}

// maxDeployments bounds the deployments view.
const maxDeployments = 50

func (c *Console) handleDeployments(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
	defer cancel()
	resp, err := c.o.Temporal.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
		Query: fmt.Sprintf("WorkflowType = '%s' AND ExecutionStatus = 'Running'", contract.WorkflowDeployment), PageSize: maxDeployments})
	if err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": err.Error()})
		return
	}
	out := []contract.DeploymentStatus{}
	for _, e := range resp.Executions {
		id, ok := strings.CutPrefix(e.GetExecution().GetWorkflowId(), contract.DeploymentWorkflowID(""))
		if !ok {
			continue
		}
		st, err := rolloutclient.DeploymentStatus(ctx, c.o.Temporal, id)
		if err != nil {
			st = contract.DeploymentStatus{DeploymentID: id, LastError: "status not readable: " + err.Error()}
		}
		out = append(out, st)
	}
	writeJSON(w, http.StatusOK, map[string]any{"deployments": out})
}
