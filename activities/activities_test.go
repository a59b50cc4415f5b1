package activities_test

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/otaflow/otaflow/activities"
	"github.com/otaflow/otaflow/internal/rolloutops"
	"github.com/otaflow/otaflow/workflows/contract"
)

// A request that can never succeed fails as non-retryable with the contract's error type, so
// the workflow stops instead of retrying; an answer passes through unchanged.
func TestActivitiesWrapTheOperations(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestActivityEnvironment()
	activities.New(&rolloutops.Ops{}).Register(env)

	_, err := env.ExecuteActivity(contract.ActivityWindow, contract.WindowInput{
		Window: contract.MaintenanceWindow{Cron: "not cron", Duration: time.Hour}, At: time.Now()})
	var app *temporal.ApplicationError
	require.True(t, errors.As(err, &app), "%v", err)
	require.Equal(t, contract.ErrInvalidRequest, app.Type())
	require.True(t, app.NonRetryable())
	require.Contains(t, app.Error(), "use five fields")

	v, err := env.ExecuteActivity(contract.ActivityWindow, contract.WindowInput{
		Window: contract.MaintenanceWindow{Cron: "0 2 * * *", Duration: time.Hour}, At: time.Date(2026, 1, 1, 2, 30, 0, 0, time.UTC)})
	require.NoError(t, err)
	var st contract.WindowState
	require.NoError(t, v.Get(&st))
	require.True(t, st.Open)
}
