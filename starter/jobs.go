package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.temporal.io/sdk/client"

	"github.com/otaflow/otaflow/internal/cliconfig"
	"github.com/otaflow/otaflow/internal/iotclient"
	"github.com/otaflow/otaflow/internal/release"
	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/internal/rolloutops"
	"github.com/otaflow/otaflow/internal/temporalconf"
	"github.com/otaflow/otaflow/workflows/contract"
)

// parseTargets accepts the seed's JSON list (["arn:...","arn:..."]) or a comma-separated list.
func parseTargets(s string) ([]string, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "[") {
		var out []string
		if err := json.Unmarshal([]byte(s), &out); err != nil {
			return nil, fmt.Errorf("--update-targets is not a JSON list of ARNs: %w", err)
		}
		return out, nil
	}
	var out []string
	for _, t := range strings.Split(s, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out, nil
}

// updateFlags describe one update: the seed's CreateSoftwareUpdateJob flags plus otaflow's
// rollout controls. create-software-update-job and schedule create share them.
type updateFlags struct {
	arch, targets, osName, sw string
	signer, logLevel, version string
	rf                        rolloutFlags
	windowCron, windowTZ      string
	windowDuration            time.Duration
	releaseFile               string
	releaseBucket             string
}

func (u *updateFlags) bind(f *pflag.FlagSet) {
	f.StringVar(&u.arch, "update-targets-architecture", "", "architecture of the core devices: armv7l, armv6l, x86_64 or aarch64")
	f.StringVar(&u.targets, "update-targets", "", `the cores to update: a JSON list of thing or thing-group ARNs (["arn:aws:iot:REGION:ACCOUNT:thing/NAME"]) or a comma-separated list`)
	f.StringVar(&u.osName, "update-targets-operating-system", "", "operating system of the core devices: ubuntu, amazon_linux, raspbian or openwrt")
	f.StringVar(&u.sw, "software-to-update", "", "core or ota_agent")
	f.StringVar(&u.signer, "s3-url-signer-role", "", "ARN of the IAM role that presigns artifact URLs")
	f.StringVar(&u.logLevel, "update-agent-log-level", "ERROR", "agent log level during the update: NONE, TRACE, DEBUG, VERBOSE, INFO, WARN, ERROR or FATAL")
	f.StringVar(&u.version, "software-version", "", `version to install, as published to --release-bucket (default: the --release file's, else the newest published); "latest": the newest published when the rollout starts (a schedule's every run)`)
	f.StringVar(&u.releaseBucket, "release-bucket", release.DefaultBucket, "the bucket releases are published to (starter release publish --bucket): where --software-version is looked up")
	f.StringVar(&u.releaseFile, "release", "", "release file from `starter release publish`: devices verify it through TUF and install it (its health check and restart policy are signed with it)")
	u.rf.bind(f, 30*time.Minute)
	f.StringVar(&u.windowCron, "window-cron", "", `maintenance windows: waves start only inside them (five-field cron, e.g. "0 2 * * *")`)
	f.DurationVar(&u.windowDuration, "window-duration", 2*time.Hour, "how long each maintenance window stays open")
	f.StringVar(&u.windowTZ, "window-time-zone", "UTC", "time zone of --window-cron (IANA name, e.g. Europe/Berlin)")
}

// request builds and validates the rollout request, the maintenance window included.
func (u *updateFlags) request(rolloutID string) (contract.RolloutRequest, error) {
	tgts, err := parseTargets(u.targets)
	if err != nil {
		return contract.RolloutRequest{}, err
	}
	req := contract.RolloutRequest{
		RolloutID: rolloutID, Targets: tgts, Architecture: u.arch, OperatingSystem: u.osName,
		SoftwareToUpdate: u.sw, Version: u.version, S3URLSignerRole: u.signer, UpdateAgentLogLevel: u.logLevel,
	}
	if err := u.rf.apply(&req); err != nil {
		return req, err
	}
	if u.version == "latest" {
		if u.releaseFile != "" {
			return req, fmt.Errorf("--software-version latest and --release exclude each other: the newest release brings its own artifact")
		}
		req.Version, req.LatestReleaseBucket = "", u.releaseBucket
	} else if u.releaseFile != "" {
		rel, err := readRelease(u.releaseFile)
		if err != nil {
			return req, err
		}
		if req.SoftwareToUpdate == "" {
			req.SoftwareToUpdate = rel.Software
		}
		if req.Version == "" {
			req.Version = rel.Version
		}
		if req.SoftwareToUpdate != rel.Software || req.Version != rel.Version {
			return req, fmt.Errorf("--release %s is %s %s, but the flags ask for %s %s", u.releaseFile, rel.Software, rel.Version, req.SoftwareToUpdate, req.Version)
		}
		req.Artifact = rel.Artifact
	}
	if u.windowCron != "" {
		req.Window = &contract.MaintenanceWindow{Cron: u.windowCron, Duration: u.windowDuration, TimeZone: u.windowTZ}
		if _, err := rolloutops.WindowAt(*req.Window, time.Now()); err != nil {
			return req, err
		}
	}
	return req, req.ValidateBeforeRelease() // attachPublished picks the version next
}

// attachPublished makes a rollout install a release as published to --release-bucket when no
// --release file names it: a version given is looked up there (one never published is refused,
// with what was), and with no version the newest published release is taken (for a schedule,
// at each run). A bucket nothing was ever published to is refused: devices, simulated ones
// too, refuse a job with nothing to download.
func (u *updateFlags) attachPublished(ctx context.Context, ic *cliconfig.IoT, req *contract.RolloutRequest, schedule bool) error {
	if u.releaseFile != "" || req.LatestReleaseBucket != "" {
		return nil
	}
	ic.Resolve()
	base := rolloutops.MetadataURLs("", localEndpoint(ic.Endpoint))
	if base == nil {
		if req.Version == "" {
			return fmt.Errorf("on AWS there is no local release bucket to pick the newest release from: name it with --release FILE (written by `starter release publish`)")
		}
		return nil // AWS: releases are wherever the operator keeps them; --release names one
	}
	rels, err := rolloutops.PublishedReleases(ctx, base(u.releaseBucket), req.SoftwareToUpdate)
	if err != nil && !errors.Is(err, rolloutops.ErrNothingPublished) {
		return fmt.Errorf("%w; or name the release yourself with --release FILE", err)
	}
	rel, err := rolloutops.PickRelease(rels, u.releaseBucket, req.SoftwareToUpdate, u.version, req.OperatingSystem, req.Architecture)
	if err != nil {
		return fmt.Errorf("%w; or name the release file with --release FILE", err)
	}
	if u.version == "" {
		if schedule {
			req.Version, req.LatestReleaseBucket = "", u.releaseBucket
			return req.Validate()
		}
		req.Version = rel.Version
		fmt.Fprintf(os.Stderr, "installing %s %s, the newest release for %s/%s published to bucket %s\n", req.SoftwareToUpdate, req.Version, req.OperatingSystem, req.Architecture, u.releaseBucket)
	}
	req.Artifact = &contract.Artifact{URL: release.S3URL(u.releaseBucket, req.SoftwareToUpdate, req.Version)}
	return req.Validate()
}

// localEndpoint is endpoint unless it is AWS's.
func localEndpoint(endpoint string) string {
	if strings.Contains(endpoint, ".amazonaws.com") {
		return ""
	}
	return endpoint
}

func createSoftwareUpdateJobCmd() *cobra.Command {
	var (
		tc           temporalconf.Temporal
		ic           cliconfig.IoT
		u            updateFlags
		clientToken  string
		wait, dryRun bool
		output       string
	)
	cmd := &cobra.Command{
		Use:   "create-software-update-job",
		Short: "Start an OTA update of core devices (Greengrass CreateSoftwareUpdateJob) as a durable rollout",
		Example: `  starter create-software-update-job \
    --update-targets-architecture x86_64 \
    --update-targets '["arn:aws:iot:us-east-1:000000000000:thing/device-0001"]' \
    --update-targets-operating-system ubuntu \
    --software-to-update core \
    --s3-url-signer-role arn:aws:iam::000000000000:role/myS3UrlSignerRole \
    --update-agent-log-level WARN \
    --amzn-client-token myClientToken1`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			rolloutID := rolloutclient.RolloutIDForToken(clientToken)
			if clientToken == "" {
				rolloutID = "update-" + time.Now().UTC().Format("20060102-150405.000")
				rolloutID = strings.ReplaceAll(rolloutID, ".", "-")
			}
			req, err := u.request(rolloutID)
			if err != nil {
				return err
			}
			if err := u.attachPublished(ctx, &ic, &req, false); err != nil {
				return err
			}
			if dryRun {
				return printPlan(ctx, ic, req, output)
			}
			return withTemporal(ctx, &tc, func(c client.Client) error {
				run, err := startRollout(ctx, c, &tc, ic, req)
				if err != nil {
					return err
				}
				res, err := rolloutclient.WaitForJob(ctx, c, rolloutID, tc.TaskQueue, time.Minute)
				if err != nil && req.Window == nil {
					return err
				}
				if res.JobID == "" && req.Window == nil {
					return fmt.Errorf("rollout %s was not started: %s", rolloutID, res.Message)
				}
				if res.JobID == "" {
					fmt.Fprintf(os.Stderr, "rollout %s started; it waits for its maintenance window: %s\n", rolloutID, res.Message)
				} else {
					enc := json.NewEncoder(os.Stdout)
					enc.SetIndent("", "    ")
					enc.Encode(map[string]string{"IotJobId": res.JobID, "IotJobArn": res.JobArn, "PlatformSoftwareVersion": cmp.Or(res.Version, req.Version)})
				}
				if wait {
					return waitForRollout(ctx, c, &ic, run, rolloutID, res.Devices)
				}
				return nil
			})
		},
	}
	f := cmd.Flags()
	tc.Bind(f)
	ic.Bind(f)
	u.bind(f)
	f.StringVar(&clientToken, "amzn-client-token", "", "idempotency token: the same token never starts a second update")
	f.BoolVar(&wait, "wait", false, "wait for the rollout to finish; exit 1 unless every device updated")
	f.BoolVar(&dryRun, "dry-run", false, "resolve targets, versions and waves and print the plan; create nothing")
	f.StringVarP(&output, "output", "o", "text", "dry-run plan format: text or json")
	return cmd
}

func describeJobCmd() *cobra.Command {
	var (
		ic    cliconfig.IoT
		jobID string
	)
	cmd := &cobra.Command{
		Use:     "describe-job",
		Short:   "Show an IoT job's status and per-state device counts (-o json: aws iot describe-job's document)",
		Example: "  starter describe-job --job-id otaflow-myClientToken1",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if jobID == "" {
				return fmt.Errorf("--job-id is required")
			}
			ic.Resolve()
			c, err := iotclient.ForCLI(cmd.Context(), &ic)
			if err != nil {
				return err
			}
			out, err := c.DescribeJob(cmd.Context(), &iot.DescribeJobInput{JobId: aws.String(jobID)})
			if err != nil {
				return fmt.Errorf("describe job %s at %s: %w", jobID, ic.Endpoint, err)
			}
			j := out.Job
			counts := rolloutops.CountsOf(j.JobProcessDetails)
			doc := map[string]any{"job": map[string]any{
				"jobArn": aws.ToString(j.JobArn), "jobId": aws.ToString(j.JobId), "targetSelection": j.TargetSelection,
				"status": j.Status, "targets": j.Targets, "description": aws.ToString(j.Description),
				"createdAt": j.CreatedAt, "lastUpdatedAt": j.LastUpdatedAt, "completedAt": j.CompletedAt,
				"jobProcessDetails": map[string]int{
					"numberOfCanceledThings": counts.Canceled, "numberOfSucceededThings": counts.Succeeded,
					"numberOfFailedThings": counts.Failed, "numberOfRejectedThings": counts.Rejected,
					"numberOfQueuedThings": counts.Queued, "numberOfInProgressThings": counts.InProgress,
					"numberOfRemovedThings": counts.Removed, "numberOfTimedOutThings": counts.TimedOut,
				},
			}}
			if !outputJSON(cmd) {
				fmt.Printf("job %s: %s  %s\n  %s\n", aws.ToString(j.JobId), j.Status, aws.ToString(j.Description), countsLine(counts))
				return nil
			}
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "    ")
			return enc.Encode(doc)
		},
	}
	ic.Bind(cmd.Flags())
	cmd.Flags().StringVar(&jobID, "job-id", "", "the IoT job ID (IotJobId from create-software-update-job)")
	return cmd
}

// waitForRollout shows the rollout's progress on stderr until it ends, then its outcome and
// the devices that did not update, each with the reason its agent gave. Exit status 1 unless
// every device updated.
func waitForRollout(ctx context.Context, c client.Client, ic *cliconfig.IoT, run client.WorkflowRun, rolloutID string, devices int) error {
	iotc, err := iotclient.ForCLI(ctx, ic)
	if err != nil {
		return err
	}
	stop, watched := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watched)
		watchRollout(ctx, c, iotc, rolloutID, devices, os.Stderr, stop)
	}()
	res, err := rolloutclient.Result(ctx, run)
	close(stop)
	<-watched
	fmt.Fprintf(os.Stderr, "rollout %s: %s: %s\n", rolloutID, res.State, countsLine(res.Counts))
	if res.Message != "" {
		fmt.Fprintf(os.Stderr, "  %s\n", res.Message)
	}
	if c := res.Counts; c.Failed+c.Rejected+c.TimedOut > 0 {
		failed, ferr := rolloutclient.DeviceResults(ctx, iotc, res, true, failedShown)
		printFailed(os.Stderr, failed)
		if ferr != nil {
			fmt.Fprintf(os.Stderr, "  (could not list every failed device: %v)\n", ferr)
		}
	}
	if err != nil {
		return exitError{code: 1}
	}
	return nil
}
