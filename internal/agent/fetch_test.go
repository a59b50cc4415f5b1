package agent

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/jobdoc"
)

// The download cap is the lower of the agent's own and the job's; either alone applies.
func TestDownloadRateIsTheLowerCap(t *testing.T) {
	for _, c := range []struct{ agent, job, want int64 }{
		{0, 0, 0}, {1000, 0, 1000}, {0, 500, 500}, {1000, 500, 500}, {500, 1000, 500},
	} {
		in := &SlotInstaller{DownloadBytesPerSecond: c.agent}
		u := &Update{Doc: &jobdoc.Document{DownloadBytesPerSecond: c.job}}
		require.Equal(t, c.want, in.rate(u), "agent %d, job %d", c.agent, c.job)
	}
}
