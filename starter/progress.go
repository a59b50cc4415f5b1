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
	"go.temporal.io/sdk/client"

	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/internal/rolloutops"
	"github.com/otaflow/otaflow/workflows/contract"
)

func isTerminal(f *os.File) bool {
	return isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd())
}

func countsLine(c contract.Counts) string {
	return fmt.Sprintf("succeeded %d  failed %d  rejected %d  timed out %d  canceled %d  in progress %d  queued %d",
		c.Succeeded, c.Failed, c.Rejected, c.TimedOut, c.Canceled, c.InProgress, c.Queued)
}

// watchRollout shows a rollout's progress until stop is closed: a progress bar on a terminal,
// a plain line whenever the counts change (and every 10 s while they do not) otherwise. Counts
// come live from the waves' jobs; the wave plan from the rollout's status query.
func watchRollout(ctx context.Context, tc client.Client, iotc *iot.Client, rolloutID string, devices int, out *os.File, stop <-chan struct{}) {
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
	var last contract.Counts
	lastWave := 0
	lastPrint := time.Time{}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		status, err := rolloutclient.Status(ctx, tc, rolloutID)
		if err == nil {
			var c contract.Counts
			for _, w := range status.Waves {
				if w.JobID == "" {
					continue
				}
				d, err := iotc.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String(w.JobID)})
				var notFound *types.ResourceNotFoundException
				if errors.As(err, &notFound) || err != nil {
					continue
				}
				c = c.Add(rolloutops.CountsOf(d.Job.JobProcessDetails))
			}
			done := c.Total() - c.Pending()
			wave := fmt.Sprintf("wave %d/%d", status.CurrentWave, len(status.Waves))
			if len(status.Waves) == 0 || status.CurrentWave == 0 {
				wave = "preparing waves" // validating, resolving targets, waiting for a window
			}
			if bar != nil {
				bar.Set(done)
				bar.Describe(fmt.Sprintf("%s  ok %d  failed %d  running %d", wave, c.Succeeded, c.Failed+c.Rejected+c.TimedOut, c.InProgress))
			} else if c != last || status.CurrentWave != lastWave || time.Since(lastPrint) > 10*time.Second {
				fmt.Fprintf(out, "%s  %s  %d/%d done  %s\n", time.Now().Format("15:04:05"), wave, done, devices, countsLine(c))
				last, lastWave, lastPrint = c, status.CurrentWave, time.Now()
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

// devicesN is n devices, in words: "1 device", "2 devices".
func devicesN(n int) string {
	if n == 1 {
		return "1 device"
	}
	return fmt.Sprintf("%d devices", n)
}
