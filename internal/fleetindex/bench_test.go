package fleetindex_test

import (
	"fmt"
	"testing"

	"github.com/otaflow/otaflow/internal/fleetindex"
)

// bigFleet is n things in 4 waves, half of each wave updated, with a health shadow.
func bigFleet(n int) *fleetindex.Index {
	ix := fleetindex.New()
	for i := range n {
		core := "1.0.0"
		if i%2 == 0 {
			core = "2.0.0"
		}
		ix.Put(fleetindex.Doc{ThingName: fmt.Sprintf("device-%07d", i), Groups: []string{fmt.Sprintf("wave-%d", i%4)},
			Attributes: map[string]string{"site": fmt.Sprint("site-", i%50)},
			Shadows: map[string]fleetindex.Shadow{"otaflow": {Reported: map[string]any{"software": map[string]any{"core": core}}},
				"health": {Reported: map[string]any{"restarts": float64(i % 7), "bootsSinceUpdate": float64(i % 3)}}}})
	}
	return ix
}

// BenchmarkGateQuery is one health gate's two aggregations (updated cohort, control cohort)
// at 100,000 things: `go test -bench GateQuery ./internal/fleetindex`.
func BenchmarkGateQuery(b *testing.B) {
	ix := bigFleet(100_000)
	updated, _ := fleetindex.Parse("(thingGroupNames:wave-0 OR thingGroupNames:wave-1) AND shadow.name.otaflow.reported.software.core:2.0.0")
	control, _ := fleetindex.Parse("shadow.name.otaflow.reported.software.core:1.0.0")
	b.ResetTimer()
	for b.Loop() {
		ix.Stats(updated, "shadow.name.health.reported.restarts", true)
		ix.Stats(control, "shadow.name.health.reported.restarts", true)
	}
}

// BenchmarkPut is one thing's update in a 100,000-thing index (a shadow report).
func BenchmarkPut(b *testing.B) {
	ix := bigFleet(100_000)
	i := 0
	b.ResetTimer()
	for b.Loop() {
		ix.Put(fleetindex.Doc{ThingName: fmt.Sprintf("device-%07d", i%100_000), Groups: []string{"wave-1"},
			Shadows: map[string]fleetindex.Shadow{"health": {Reported: map[string]any{"restarts": float64(i % 9)}}}})
		i++
	}
}
