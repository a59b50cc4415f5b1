package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"
	"github.com/mattn/go-isatty"
	"github.com/schollz/progressbar/v3"

	"github.com/otaflow/otaflow/activities"
	"github.com/otaflow/otaflow/workflows"
)

func isTerminal(f *os.File) bool {
	return isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd())
}

func countsLine(c workflows.Counts) string {
	return fmt.Sprintf("succeeded %d  failed %d  rejected %d  timed out %d  canceled %d  in progress %d  queued %d",
		c.Succeeded, c.Failed, c.Rejected, c.TimedOut, c.Canceled, c.InProgress, c.Queued)
}

// watchJob shows a job's progress until stop is closed: a progress bar on a terminal, a plain
// line whenever the counts change (and every 10 s while they do not) otherwise.
func watchJob(ctx context.Context, client *iot.Client, jobID string, devices int, out *os.File, stop <-chan struct{}) {
	var bar *progressbar.ProgressBar
	if isTerminal(out) {
		bar = progressbar.NewOptions(devices,
			progressbar.OptionSetWriter(out),
			progressbar.OptionSetDescription("waiting for devices"),
			progressbar.OptionShowCount(),
			progressbar.OptionSetWidth(30),
			progressbar.OptionClearOnFinish(),
		)
	}
	var last workflows.Counts
	lastPrint := time.Time{}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		d, err := client.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String(jobID)})
		var notFound *types.ResourceNotFoundException
		switch {
		case errors.As(err, &notFound):
			// not created yet: the rollout is still validating
		case err != nil:
			fmt.Fprintf(out, "progress: %v\n", err)
		default:
			c := activities.CountsOf(d.Job.JobProcessDetails)
			done := c.Total() - c.Pending()
			if bar != nil {
				bar.Set(done)
				bar.Describe(fmt.Sprintf("ok %d  failed %d  running %d", c.Succeeded, c.Failed+c.Rejected+c.TimedOut, c.InProgress))
			} else if c != last || time.Since(lastPrint) > 10*time.Second {
				fmt.Fprintf(out, "%s  %d/%d done  %s\n", time.Now().Format("15:04:05"), done, devices, countsLine(c))
				last, lastPrint = c, time.Now()
			}
		}
		select {
		case <-stop:
			if bar != nil {
				bar.Finish()
				fmt.Fprintln(out)
			}
			return
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
