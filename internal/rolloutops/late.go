package rolloutops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"

	"github.com/otaflow/otaflow/internal/iotjobs"
)

// Device truth. When the jobs service times an execution out while the device is still
// installing (it could not reach the service, or the install outlasted the timeout), the
// device's report of success arrives after the execution ended, and the service refuses it,
// as AWS does. The agent keeps the working update and says so in its inventory shadow
// (lastJob.late, with the version it came from). The rollout reads that through the fleet
// index, the same way on AWS as here, and counts such devices as updated-but-late; a rollback
// includes them.

// LateDevice is a device that installed a job's update after its execution was timed out.
type LateDevice struct {
	Thing string
	// Version is what the device runs now; Previous the version it updated from.
	Version, Previous string
}

// lateQuery selects the devices whose inventory reports a late success of jobID.
func lateQuery(jobID string) string {
	prefix := "shadow.name." + iotjobs.InventoryShadow + ".reported.lastJob."
	return prefix + "late:true AND " + prefix + "jobId:" + quoteTerm(jobID) + " AND " + prefix + "status:SUCCEEDED"
}

// LateDevices lists the late devices of the jobs. Without a fleet index (indexing off, or a
// named shadow not indexed) it answers nothing and says why in note.
func (a *Ops) LateDevices(ctx context.Context, jobIDs []string) (late []LateDevice, note string, err error) {
	for _, jobID := range jobIDs {
		if c, err := a.counts(ctx, jobID); err != nil {
			return nil, "", err
		} else if c.TimedOut == 0 {
			continue // no execution timed out: no device can be late
		}
		in := &iot.SearchIndexInput{QueryString: aws.String(lateQuery(jobID)), MaxResults: aws.Int32(500)}
		for {
			out, err := a.IoT.SearchIndex(ctx, in)
			var notReady *types.IndexNotReadyException
			var notFound *types.ResourceNotFoundException
			var invalid *types.InvalidQueryException
			if errors.As(err, &notReady) || errors.As(err, &notFound) || errors.As(err, &invalid) {
				return nil, "late devices are not known: the fleet index does not cover the " + iotjobs.InventoryShadow +
					" shadow (turn on thing indexing with named shadow " + iotjobs.InventoryShadow + ")", nil
			}
			if err != nil {
				return nil, "", fmt.Errorf("search the fleet index for late devices of %s: %w", jobID, err)
			}
			for _, th := range out.Things {
				d := LateDevice{Thing: aws.ToString(th.ThingName)}
				var sh struct {
					Name map[string]struct {
						Reported struct {
							LastJob struct {
								Version         string `json:"version"`
								PreviousVersion string `json:"previousVersion"`
							} `json:"lastJob"`
						} `json:"reported"`
					} `json:"name"`
				}
				if json.Unmarshal([]byte(aws.ToString(th.Shadow)), &sh) == nil {
					lj := sh.Name[iotjobs.InventoryShadow].Reported.LastJob
					d.Version, d.Previous = lj.Version, lj.PreviousVersion
				}
				late = append(late, d)
			}
			if aws.ToString(out.NextToken) == "" {
				break
			}
			in.NextToken = out.NextToken
		}
	}
	return late, "", nil
}
