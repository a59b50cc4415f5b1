package stack_test

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/agent"
	"github.com/otaflow/otaflow/internal/components"
	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/internal/stack"
	"github.com/otaflow/otaflow/workflows/contract"
)

const streamManager = "aws.greengrass.StreamManager"

// TestContinuousDeploymentNucleusTable checks the four rows of the seed's "Greengrass nucleus
// update behavior" table on the real stack.
func TestContinuousDeploymentNucleusTable(t *testing.T) {
	ctx := context.Background()
	s, err := stack.Start(ctx, stack.Options{DataDir: t.TempDir(), InMemoryTemporal: true, UIPort: -1, Logger: testLogger()})
	require.NoError(t, err)
	defer s.Close()
	_, err = s.StartDevices(ctx, 4, "", 0)
	require.NoError(t, err)
	_, err = s.IoT.CreateThingGroup(ctx, &iot.CreateThingGroupInput{ThingGroupName: aws.String("fleet")})
	require.NoError(t, err)
	join := func(i int) {
		_, err := s.IoT.AddThingToThingGroup(ctx, &iot.AddThingToThingGroupInput{ThingGroupName: aws.String("fleet"), ThingName: aws.String(stack.Device(i))})
		require.NoError(t, err)
	}
	agents := s.Agents()
	nucleus := func(a *agent.Agent) string { return a.InstalledVersion(components.Nucleus) }
	eventually := func(check func() bool, what string) {
		t.Helper()
		require.Eventually(t, check, 30*time.Second, 50*time.Millisecond, what)
	}
	join(1)
	join(2)

	// Row 3: a new deployment that does not include the nucleus, but a component that depends
	// on it: every device gets the newest nucleus that fits (stream manager 2.0.8: < 2.2.0).
	_, err = rolloutclient.StartDeployment(ctx, s.Client, contract.TaskQueue, contract.DeploymentRequest{
		DeploymentID: "fleet-sm", ThingGroup: "fleet", Components: map[string]string{streamManager: ""}, SyncInterval: 200 * time.Millisecond,
	})
	require.NoError(t, err)
	eventually(func() bool { return nucleus(agents[0]) == "2.1.1" && nucleus(agents[1]) == "2.1.1" }, "row 3: devices 1-2 on nucleus 2.1.1")
	require.Equal(t, "2.0.8", agents[0].InstalledVersion(streamManager))

	// Row 1: a device joins without a revision, after a newer nucleus patch was published: the
	// new device takes it; existing devices keep theirs.
	require.NoError(t, s.Catalog.Add(components.Recipe{Name: components.Nucleus, Version: "2.1.2"}))
	join(3)
	eventually(func() bool { return nucleus(agents[2]) == "2.1.2" }, "row 1: device 3 on the newest nucleus")
	time.Sleep(500 * time.Millisecond)
	require.Equal(t, "2.1.1", nucleus(agents[0]), "row 1: existing devices are not updated")

	// Row 4: revising the deployment to include a specific nucleus version updates everyone.
	_, err = rolloutclient.ReviseDeployment(ctx, s.Client, "fleet-sm", map[string]string{streamManager: "", components.Nucleus: "2.1.0"})
	require.NoError(t, err)
	eventually(func() bool {
		return nucleus(agents[0]) == "2.1.0" && nucleus(agents[1]) == "2.1.0" && nucleus(agents[2]) == "2.1.0"
	}, "row 4: every device on the pinned nucleus")

	// Row 2: a device joins a deployment that pins the nucleus: it gets the pinned version even
	// though newer ones exist; existing devices are not touched.
	require.NoError(t, s.Catalog.Add(components.Recipe{Name: components.Nucleus, Version: "2.1.3"}))
	join(4)
	eventually(func() bool { return nucleus(agents[3]) == "2.1.0" }, "row 2: device 4 on the pinned nucleus")
	st, err := rolloutclient.DeploymentStatus(ctx, s.Client, "fleet-sm")
	require.NoError(t, err)
	require.Equal(t, 2, st.Revision)
	require.Equal(t, 4, st.Members)
	require.Empty(t, st.LastError)

	// A revision that cannot be resolved is reported, and nothing is deployed.
	_, err = rolloutclient.ReviseDeployment(ctx, s.Client, "fleet-sm", map[string]string{streamManager: "2.0.7", components.Nucleus: "2.1.0"})
	require.NoError(t, err)
	eventually(func() bool {
		st, err := rolloutclient.DeploymentStatus(ctx, s.Client, "fleet-sm")
		return err == nil && st.LastError != ""
	}, "the conflict is reported")
	st, _ = rolloutclient.DeploymentStatus(ctx, s.Client, "fleet-sm")
	require.Contains(t, st.LastError, "update aws.greengrass.StreamManager to 2.0.8 or later")
	require.Equal(t, "2.1.0", nucleus(agents[0]))

	// The console's deployments view shows it, its members and the reported conflict.
	tab := chromium(t)
	tab, cancel := context.WithTimeout(tab, time.Minute)
	defer cancel()
	require.NoError(t, chromedp.Do(tab, chromedp.Navigate(s.ConsoleURL)))
	require.NoError(t, chromedp.Do(tab, chromedp.WaitVisible(`#deployments tr[data-deployment="fleet-sm"] td`)))
	row, err := chromedp.Run(tab, chromedp.Evaluate[string](`document.querySelector('#deployments tr[data-deployment="fleet-sm"]').textContent`))
	require.NoError(t, err)
	require.Contains(t, row, "aws.greengrass.Nucleus 2.1.0")
	require.Contains(t, row, "2.0.8 or later")
}
