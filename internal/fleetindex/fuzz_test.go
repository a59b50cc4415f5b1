package fleetindex_test

import (
	"testing"

	"github.com/otaflow/otaflow/internal/fleetindex"
)

// FuzzParse: no query makes the parser or the index panic, and what parses evaluates.
// `go test -fuzz FuzzParse ./internal/fleetindex` explores; plain `go test` runs the seeds.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{"*", "abc", "thingName:my*", "attributes.a:[1 TO 2}", "a:(b OR -c) NOT d>=3",
		`x:"a b"`, `x:a\*b`, "((((", "a:{* TO 5]", "-", "NOT NOT a", "a:b:c", "a<", "shadow.name.s.reported.x:*y?"} {
		f.Add(seed)
	}
	ix := fleet()
	f.Fuzz(func(t *testing.T, q string) {
		n, err := fleetindex.Parse(q)
		if err != nil {
			return
		}
		ix.Search(n, "", 10)
		ix.Stats(n, "attributes.myAttribute", true)
	})
}
