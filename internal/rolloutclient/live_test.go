package rolloutclient

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"
	"github.com/stretchr/testify/require"
)

// jobs answers DescribeJob from a map, ResourceNotFound for the rest.
type jobs map[string]*types.JobProcessDetails

func (j jobs) DescribeJob(_ context.Context, in *iot.DescribeJobInput, _ ...func(*iot.Options)) (*iot.DescribeJobOutput, error) {
	p, ok := j[aws.ToString(in.JobId)]
	if !ok {
		return nil, &types.ResourceNotFoundException{Message: aws.String("no such job")}
	}
	return &iot.DescribeJobOutput{Job: &types.Job{JobId: in.JobId, JobProcessDetails: p}}, nil
}

// While a rollout rolls back, its rollback jobs are read live: the wait shows progress.
func TestRollbackProgressReadsTheRollbackJobs(t *testing.T) {
	require.Nil(t, rollbackProgress(context.Background(), jobs{}, "r1"), "no rollback job yet")
	p := rollbackProgress(context.Background(), jobs{
		"otaflow-r1-rb1": {NumberOfSucceededThings: aws.Int32(60), NumberOfQueuedThings: aws.Int32(40)},
		"otaflow-r1-rb2": {NumberOfSucceededThings: aws.Int32(5), NumberOfFailedThings: aws.Int32(2), NumberOfInProgressThings: aws.Int32(3)},
	}, "r1")
	require.Equal(t, []string{"otaflow-r1-rb1", "otaflow-r1-rb2"}, p.JobIDs)
	require.Equal(t, 110, p.Devices)
	require.Equal(t, 65, p.RolledBack)
	require.Equal(t, 2, p.Failed)
	require.Equal(t, "rolling back: 67 of 110 devices done", p.Message)
}
