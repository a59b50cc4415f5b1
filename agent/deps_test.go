package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The agent runs on small devices: it must not link Temporal or the AWS SDK.
func TestAgentStaysSmall(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v: %s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"go.temporal.io/", "github.com/aws/", "github.com/mochi-mqtt/", "go.etcd.io/bbolt"} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("the agent links %s", dep)
			}
		}
	}
}
