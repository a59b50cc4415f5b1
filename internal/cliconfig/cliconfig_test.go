package cliconfig_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/cliconfig"
	"github.com/otaflow/otaflow/workflows/contract"
)

// cliconfig may not import workflows (the agent must not link the Temporal SDK), so the
// default task queue is repeated there; this keeps the two equal.
func TestDefaultTaskQueueMatchesWorkflows(t *testing.T) {
	require.Equal(t, contract.TaskQueue, cliconfig.DefaultTaskQueue)
}
