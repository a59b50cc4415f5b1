package localiot_test

import (
	"io"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/localiot/rest"
	"github.com/otaflow/otaflow/internal/pgtest"
)

// A replica whose clock is off says so in its health check, which stays healthy: time is
// decided on the database's clock.
func TestHealthCheckSaysTheClockIsOff(t *testing.T) {
	svc, err := localiot.Open(localiot.Options{PostgresURL: pgtest.DB(t), ArtifactDir: t.TempDir(), Logger: zerolog.Nop(),
		Now: func() time.Time { return time.Now().Add(-90 * time.Second) }})
	require.NoError(t, err)
	defer svc.Close()
	srv := httptest.NewServer(rest.Handler(svc, &rest.SigV4Verifier{Creds: testCreds, Region: "us-east-1"}))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/healthz")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	require.Equal(t, 200, resp.StatusCode)
	require.Contains(t, string(body), "this replica's clock is 1m30s behind the database's")
}
