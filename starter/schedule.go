package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/sdk/client"

	"github.com/otaflow/otaflow/internal/cliconfig"
	"github.com/otaflow/otaflow/internal/iotclient"
	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/internal/rolloutops"
	"github.com/otaflow/otaflow/internal/temporalconf"
	"github.com/otaflow/otaflow/workflows/contract"
)

func scheduleCmd() *cobra.Command {
	var tc temporalconf.Temporal
	cmd := &cobra.Command{Use: "schedule", Short: "Scheduled staged rollouts (Temporal Schedules)"}
	tc.Bind(cmd.PersistentFlags())

	var (
		u        updateFlags
		cronExpr string
		tz       string
		paused   bool
		ic       cliconfig.IoT
	)
	create := &cobra.Command{
		Use:   "create SCHEDULE_ID",
		Short: "Run a rollout on a schedule; each run is its own rollout (ID: SCHEDULE_ID plus the run time)",
		Example: `  starter schedule create nightly-core --cron "0 1 * * *" --time-zone Europe/Berlin \\
    --update-targets arn:aws:iot:us-east-1:000000000000:thinggroup/fleet --update-targets-architecture x86_64 \\
    --update-targets-operating-system ubuntu --software-to-update core \\
    --s3-url-signer-role arn:aws:iam::000000000000:role/signer --waves 1,10%,100% --on-failure ROLLBACK \\
    --window-cron "0 2 * * *" --window-duration 3h --window-time-zone Europe/Berlin`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cronExpr == "" {
				return fmt.Errorf("--cron is required (five fields, e.g. \"0 1 * * *\")")
			}
			req, err := u.request(contract.RolloutIDFor(args[0]))
			if err != nil {
				return err
			}
			if err := u.attachPublished(cmd.Context(), &ic, &req, true); err != nil {
				return err
			}
			// Targets that do not resolve now would fail every night: refuse them now. An
			// existing group that is empty today is fine (devices may join it by then).
			iotc, err := iotclient.ForCLI(cmd.Context(), &ic)
			if err != nil {
				return err
			}
			if _, err := (&rolloutops.Ops{IoT: iotc}).ResolveTargets(cmd.Context(), req); err != nil && !strings.Contains(err.Error(), "hold no things") {
				return fmt.Errorf("schedule %s not created: its targets do not resolve: %s", args[0], rolloutclient.RootMessage(err))
			}
			return withTemporal(cmd.Context(), &tc, func(c client.Client) error {
				if _, err := rolloutclient.CreateSchedule(cmd.Context(), c, tc.TaskQueue, args[0], cronExpr, tz, paused, req); err != nil {
					return err
				}
				return emit(cmd, map[string]any{"scheduleId": args[0], "cron": cronExpr, "timeZone": tz, "paused": paused},
					"schedule %s created: %q (%s)\n", args[0], cronExpr, tz)
			})
		},
	}
	u.bind(create.Flags())
	ic.Bind(create.Flags())
	create.Flags().StringVar(&cronExpr, "cron", "", "when to start a rollout (five-field cron)")
	create.Flags().StringVar(&tz, "time-zone", "UTC", "time zone of --cron")
	create.Flags().BoolVar(&paused, "paused", false, "create the schedule paused")

	list := &cobra.Command{
		Use: "list", Short: "List rollout schedules and their next runs",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withTemporal(cmd.Context(), &tc, func(c client.Client) error {
				it, err := c.ScheduleClient().List(cmd.Context(), client.ScheduleListOptions{PageSize: 100})
				if err != nil {
					return fmt.Errorf("list schedules: %w", err)
				}
				type row struct {
					ID   string   `json:"scheduleId"`
					Cron []string `json:"cron"`
					Next []string `json:"nextRuns"`
				}
				var rows []row
				for it.HasNext() {
					e, err := it.Next()
					if err != nil {
						return err
					}
					if e.WorkflowType.Name != contract.WorkflowRollout {
						continue
					}
					r := row{ID: e.ID}
					if e.Spec != nil {
						for _, cal := range e.Spec.Calendars {
							r.Cron = append(r.Cron, fmt.Sprintf("%v", cal))
						}
					}
					for _, t := range e.NextActionTimes {
						r.Next = append(r.Next, t.Format(time.RFC3339))
					}
					rows = append(rows, r)
				}
				if outputJSON(cmd) {
					return json.NewEncoder(os.Stdout).Encode(rows)
				}
				fmt.Printf("%-30s %s\n", "SCHEDULE", "NEXT RUNS")
				for _, r := range rows {
					fmt.Printf("%-30s %s\n", r.ID, strings.Join(r.Next, " "))
				}
				return nil
			})
		},
	}

	del := &cobra.Command{
		Use: "delete SCHEDULE_ID", Short: "Delete a rollout schedule (rollouts it started keep running)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withTemporal(cmd.Context(), &tc, func(c client.Client) error {
				if err := c.ScheduleClient().GetHandle(cmd.Context(), args[0]).Delete(cmd.Context()); err != nil {
					return fmt.Errorf("delete schedule %s: %w", args[0], err)
				}
				return emit(cmd, map[string]string{"scheduleId": args[0], "state": "deleted"}, "schedule %s deleted\n", args[0])
			})
		},
	}
	cmd.AddCommand(create, list, del)
	return cmd
}
