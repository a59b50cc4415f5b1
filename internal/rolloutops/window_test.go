package rolloutops_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/rolloutops"
	"github.com/otaflow/otaflow/workflows/contract"
)

func TestWindowAt(t *testing.T) {
	w := contract.MaintenanceWindow{Cron: "0 2 * * *", Duration: 3 * time.Hour, TimeZone: "Europe/Berlin"}
	berlin, err := time.LoadLocation("Europe/Berlin")
	require.NoError(t, err)
	at := func(h, m int) time.Time { return time.Date(2026, 11, 23, h, m, 0, 0, berlin) }

	s, err := rolloutops.WindowAt(w, at(3, 30))
	require.NoError(t, err)
	require.True(t, s.Open)
	require.Equal(t, at(5, 0).UTC(), s.ClosesAt)

	s, err = rolloutops.WindowAt(w, at(5, 0))
	require.NoError(t, err)
	require.False(t, s.Open, "the window closes at 05:00")
	require.Equal(t, at(2, 0).Add(24*time.Hour).UTC(), s.OpensAt)

	s, err = rolloutops.WindowAt(w, at(1, 59))
	require.NoError(t, err)
	require.False(t, s.Open)
	require.Equal(t, at(2, 0).UTC(), s.OpensAt)

	s, err = rolloutops.WindowAt(w, at(2, 0))
	require.NoError(t, err)
	require.True(t, s.Open, "open from its first second")

	_, err = rolloutops.WindowAt(contract.MaintenanceWindow{Cron: "every night", Duration: time.Hour}, at(1, 0))
	require.ErrorContains(t, err, "cron")
	_, err = rolloutops.WindowAt(contract.MaintenanceWindow{Cron: "0 2 * * *", Duration: time.Hour, TimeZone: "Mars/Olympus"}, at(1, 0))
	require.ErrorContains(t, err, "time zone")
}
