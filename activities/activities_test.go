package activities_test

import (
	"errors"
	"reflect"
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

// Every activity of the contract is a method of Activities under its name, with the contract's
// input, and its result or a pointer to it: a workflow and the worker cannot disagree on an
// activity's types, and a live workflow's activity names stay the methods' names.
func TestActivitiesMatchTheContract(t *testing.T) {
	acts := reflect.ValueOf(activities.New(&rolloutops.Ops{}))
	all := reflect.ValueOf(contract.Activities)
	require.Positive(t, all.NumField())
	for i := range all.NumField() {
		act := all.Field(i)
		name := act.FieldByName("Name").String()
		in, out := act.Interface().(interface {
			Types() (reflect.Type, reflect.Type)
		}).Types()
		m := acts.MethodByName(name)
		require.True(t, m.IsValid(), "no method %s for contract.Activities.%s", name, all.Type().Field(i).Name)
		mt := m.Type()
		require.Equal(t, 2, mt.NumIn(), name)
		require.Equal(t, in.String(), mt.In(1).String(), "%s's input", name)
		if out == reflect.TypeFor[struct{}]() {
			require.Equal(t, 1, mt.NumOut(), "%s returns only an error", name)
			continue
		}
		require.Equal(t, 2, mt.NumOut(), name)
		require.Contains(t, []string{out.String(), reflect.PointerTo(out).String()}, mt.Out(0).String(), "%s's result", name)
	}
}
