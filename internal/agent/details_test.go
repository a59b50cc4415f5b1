package agent

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/otaflow/otaflow/internal/iotjobs"
	"github.com/stretchr/testify/require"
)

// TestFitDetails: what the agent reports fits AWS IoT's statusDetails limits, so a FAILED
// report carrying a script's output is taken, not refused and resent forever.
func TestFitDetails(t *testing.T) {
	got := fitDetails(map[string]string{
		"reason":          "pre-update script failed:\nservice would not stop\r\n",
		"previousVersion": "",
		"output":          strings.Repeat("é", 3000),
	})
	require.Equal(t, "pre-update script failed: service would not stop  ", got["reason"])
	require.NotContains(t, got, "previousVersion", "an empty value is left out")
	require.Equal(t, iotjobs.MaxDetailsValue, utf8.RuneCountInString(got["output"]))
	require.True(t, strings.HasSuffix(got["output"], "…"))
}
