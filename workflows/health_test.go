package workflows_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/otaflow/otaflow/internal/workermetrics"
	"github.com/otaflow/otaflow/workflows"
	"github.com/otaflow/otaflow/workflows/contract"
)

func f64(v float64) *float64 { return &v }

// TestHealthCriteriaJudgement: a criterion is judged only on enough devices, against its
// absolute bound and against the control cohort, and says why in the operator's words.
func TestHealthCriteriaJudgement(t *testing.T) {
	restarts := contract.HealthCriterion{Name: "restarts per device", Metric: "restarts", Statistic: "average", MaxRatio: 3, MinSample: 20}
	v := restarts.Judge(4.1, 250, 0.1, 9750, "waves 1-2")
	require.True(t, v.Breached)
	require.Equal(t, "restarts per device 4.1 in waves 1-2 (n=250) against 0.1 in control (n=9750): over the 3x bound", v.Note)
	require.False(t, restarts.Judge(0.2, 250, 0.1, 9750, "waves 1-2").Breached, "within 3x")
	v = restarts.Judge(9, 10, 0.1, 9750, "wave 1")
	require.False(t, v.Breached)
	require.Contains(t, v.Note, "not judged: 10 updated devices reported it, fewer than the 20 needed")
	v = restarts.Judge(9, 30, 0.1, 5, "wave 1")
	require.False(t, v.Breached)
	require.Contains(t, v.Note, "not compared: 5 control devices")

	share := contract.HealthCriterion{Metric: "healthCheckFailures", Statistic: "share", Max: f64(0.1)}
	v = share.Judge(0.5, 2, 0, 0, "waves 1-2")
	require.True(t, v.Breached)
	require.Equal(t, "share of healthCheckFailures 50% in waves 1-2 (n=2): over the bound 10%", v.Note)
	require.False(t, share.Judge(0.1, 10, 0, 0, "wave 1").Breached, "at the bound is within it")
	require.Equal(t, "shadow.name.health.reported.metrics.errors", contract.HealthCriterion{Metric: "metrics.errors"}.Field())
	require.Equal(t, "shadow.name.app.reported.x", contract.HealthCriterion{Metric: "shadow.name.app.reported.x"}.Field())
	require.Equal(t, 95.0, contract.HealthCriterion{Statistic: "p95"}.Percent())
}

func TestHealthGateValidation(t *testing.T) {
	req := validRequest()
	req.Waves = "1,50%,100%"
	req.Health = &contract.HealthGate{Window: time.Minute, Interval: 2 * time.Minute, Action: "explode", NoDefaults: true,
		Criteria: []contract.HealthCriterion{
			{Metric: "rest arts", Statistic: "average", Max: f64(1)},
			{Metric: "restarts", Statistic: "median", Max: f64(1)},
			{Metric: "restarts", Statistic: "average"},
			{Metric: "healthCheckFailures", Statistic: "share", Max: f64(10)},
		}}
	err := req.Validate()
	require.Error(t, err)
	for _, want := range []string{"health interval must be positive and at most the window", `action "explode": use pause or abort`,
		`metric "rest arts" is not a field name`, `statistic "median": use average, sum, maximum, share, stale or p1`,
		"give a bound: max (absolute) and/or maxRatio", "a share's max is a fraction from 0 to 1, not 10"} {
		require.Contains(t, err.Error(), want)
	}
	req.Health = &contract.HealthGate{Window: time.Minute, Interval: time.Second}
	require.NoError(t, req.Validate(), "the defaults alone")
	req.Waves = "1,2,3,4,5,6,7,8,9,10,11"
	require.ErrorContains(t, req.Validate(), "at most 10 waves")
}

// healthFleet is a fleet whose EvaluateHealth answers from verdict(wave evaluated, evaluation).
func healthFleet(t *testing.T, env *testsuite.TestWorkflowEnvironment, verdict func(groups int, n int) string) (*fleet, *[]contract.EvaluateHealthInput) {
	f := &fleet{devices: 10, outcome: allSucceed}
	f.register(env)
	var calls []contract.EvaluateHealthInput
	env.RegisterActivityWithOptions(func(ctx context.Context, in contract.EvaluateHealthInput) (*contract.EvaluateHealthResult, error) {
		calls = append(calls, in)
		n := 0
		for _, c := range calls {
			if len(c.UpdatedGroups) == len(in.UpdatedGroups) {
				n++
			}
		}
		res := &contract.EvaluateHealthResult{Values: []contract.CriterionValue{{Criterion: "devices failing their health check", UpdatedN: len(in.UpdatedGroups)}}}
		if b := verdict(len(in.UpdatedGroups), n); b != "" {
			res.Breach = b
			res.Values[0].Breached = true
		}
		return res, nil
	}, activity.RegisterOptions{Name: contract.ActivityEvaluateHealth})
	return f, &calls
}

// TestHealthGateWatchesEachWave: every wave is watched for the window, on durable timers,
// with the earlier waves' devices counting and the later waves' as control; a healthy
// release passes every gate.
func TestHealthGateWatchesEachWave(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	f, calls := healthFleet(t, env, func(int, int) string { return "" })
	req := waveRequest()
	req.Health = &contract.HealthGate{Window: 10 * time.Minute, Interval: time.Minute}
	start := env.Now()
	env.ExecuteWorkflow(workflows.Rollout, req)
	require.NoError(t, env.GetWorkflowError())
	var res contract.RolloutResult
	require.NoError(t, env.GetWorkflowResult(&res))
	require.Equal(t, contract.StateSucceeded, res.State)
	require.Len(t, *calls, 30, "ten evaluations per wave")
	first, last := (*calls)[0], (*calls)[29]
	require.Equal(t, []string{contract.WaveGroup("r1", 1)}, first.UpdatedGroups)
	require.Equal(t, []string{contract.WaveGroup("r1", 2), contract.WaveGroup("r1", 3)}, first.ControlGroups)
	require.Len(t, last.UpdatedGroups, 3)
	require.Empty(t, last.ControlGroups)
	require.Len(t, first.Criteria, 3, "the defaults")
	require.GreaterOrEqual(t, env.Now().Sub(start), 30*time.Minute, "three windows of test time")
	for _, w := range res.Waves {
		require.Equal(t, contract.HealthPassed, w.Health.State)
		require.Equal(t, 10, w.Health.Evaluations)
		require.Len(t, w.Health.History, 10)
	}
	require.Len(t, f.created, 3)
}

// TestHealthBreachAbortsAndRollsBack: a release that breaches the gate in the second wave
// stops there: no third wave, the updated devices rolled back, the reason kept.
func TestHealthBreachAbortsAndRollsBack(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	metrics, err := workermetrics.New(false)
	require.NoError(t, err)
	s.SetMetricsHandler(metrics.Temporal)
	env := s.NewTestWorkflowEnvironment()
	f, _ := healthFleet(t, env, func(groups, n int) string {
		if groups == 2 && n == 3 {
			return "devices failing their health check 50% in waves 1-2 (n=4): over the bound 10%"
		}
		return ""
	})
	req := waveRequest()
	req.OnFailure = contract.OnFailureRollback
	req.Health = &contract.HealthGate{Window: 10 * time.Minute, Interval: time.Minute, Action: contract.HealthAbort}
	env.ExecuteWorkflow(workflows.Rollout, req)
	var appErr *temporal.ApplicationError
	require.True(t, errors.As(env.GetWorkflowError(), &appErr))
	require.Equal(t, contract.ErrRolloutAborted, appErr.Type())
	var res contract.RolloutResult
	require.NoError(t, appErr.Details(&res))
	require.Len(t, f.created, 2, "the third wave never started")
	require.Len(t, f.rollbacks, 1)
	require.Contains(t, res.Message, "health gate breached: devices failing their health check 50% in waves 1-2 (n=4)")
	require.Equal(t, contract.WaveFailed, res.Waves[1].State)
	require.Equal(t, contract.HealthBreached, res.Waves[1].Health.State)
	require.Equal(t, 3, res.Waves[1].Health.Evaluations)
	require.Equal(t, contract.WaveCanceled, res.Waves[2].State)

	// The worker's metrics count the gate's evaluations and the rollout's events.
	count := func(name, label, value string) float64 {
		families, err := metrics.Registry.Gather()
		require.NoError(t, err)
		for _, f := range families {
			if f.GetName() != name {
				continue
			}
			for _, m := range f.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == label && l.GetValue() == value {
						return m.GetCounter().GetValue()
					}
				}
			}
		}
		return 0
	}
	require.Equal(t, 1.0, count("otaflow_health_gate_evaluations_total", "result", "breached"))
	require.Equal(t, float64(res.Waves[0].Health.Evaluations+2), count("otaflow_health_gate_evaluations_total", "result", "passed"))
	require.Equal(t, 1.0, count("otaflow_rollout_events_total", "event", contract.EventHealthBreached))
	require.Equal(t, 1.0, count("otaflow_rollout_events_total", "event", contract.EventAborted))
	require.Equal(t, 1.0, count("otaflow_rollout_events_total", "event", contract.EventWavePassed), "wave 1 only: a wave passes once its job and its gate did")
}

// TestHealthBreachHoldsForTheOperator: under the pause action a breach holds the rollout
// until an operator overrides it (recorded with who and why), then it goes on.
func TestHealthBreachHoldsForTheOperator(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	f, _ := healthFleet(t, env, func(groups, n int) string {
		if groups == 1 && n == 2 {
			return "restarts per device 4.1 in wave 1 (n=1) against 0.1 in control (n=9): over the 3x bound"
		}
		return ""
	})
	req := waveRequest()
	req.Health = &contract.HealthGate{Window: 5 * time.Minute, Interval: time.Minute}
	env.RegisterDelayedCallback(func() {
		var res contract.RolloutResult
		v, err := env.QueryWorkflow(contract.QueryStatus)
		require.NoError(t, err)
		require.NoError(t, v.Get(&res))
		require.Equal(t, contract.HealthBreached, res.Waves[0].Health.State)
		require.Contains(t, res.Message, "health gate breached, rollout held")
		require.Len(t, f.created, 1, "held: no second wave")
		env.UpdateWorkflow(contract.UpdateOverrideHealth, "u0", &testsuite.TestUpdateCallback{
			OnReject: func(err error) { require.ErrorContains(t, err, "say why") }, OnAccept: func() { t.Fatal("accepted without a reason") }, OnComplete: func(any, error) {},
		}, contract.OverrideRequest{By: "alice"})
		env.UpdateWorkflow(contract.UpdateOverrideHealth, "u1", &testsuite.TestUpdateCallback{
			OnReject: func(err error) { t.Fatal(err) }, OnAccept: func() {}, OnComplete: func(any, error) {},
		}, contract.OverrideRequest{By: "alice", Reason: "restarts are the new watchdog's, expected"})
	}, time.Hour)
	env.ExecuteWorkflow(workflows.Rollout, req)
	require.NoError(t, env.GetWorkflowError())
	var res contract.RolloutResult
	require.NoError(t, env.GetWorkflowResult(&res))
	require.Equal(t, contract.StateSucceeded, res.State)
	o := res.Waves[0].Health.Override
	require.NotNil(t, o)
	require.Equal(t, "alice", o.By)
	require.Equal(t, contract.HealthOverridden, res.Waves[0].Health.State)
	require.Len(t, f.created, 3)
}
