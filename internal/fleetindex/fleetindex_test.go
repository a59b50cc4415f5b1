package fleetindex_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/fleetindex"
)

func boolp(b bool) *bool { return &b }

// fleet is a small fleet with the fields AWS's example queries use.
func fleet() *fleetindex.Index {
	ix := fleetindex.New()
	ix.Put(fleetindex.Doc{ThingName: "myThingName", ThingTypeName: "aa", Groups: []string{"a", "abc"},
		Attributes: map[string]string{"myAttribute": "75", "serialNumber": "abcd", "attr1": "abc", "attr2": "3", "attr3": "12"}})
	ix.Put(fleetindex.Doc{ThingName: "my-tv", Groups: []string{"b"},
		Attributes: map[string]string{"myAttribute": "80", "serialNumber": "abcf", "attr1": "abc", "attr2": "4", "attr3": "5"},
		Connected:  boolp(true), ConnectedAt: 1556649874716})
	ix.Put(fleetindex.Doc{ThingName: "tv-plasma", Attributes: map[string]string{"myAttribute": "81", "serialNumber": "abcg", "myAttribute2": "i-am-it"},
		Connected: boolp(false), ConnectedAt: 1556649874000})
	ix.Put(fleetindex.Doc{ThingName: "aba", Attributes: map[string]string{"myAttribute": "inspect"},
		Shadows: map[string]fleetindex.Shadow{"otaflow": {Reported: map[string]any{"software": map[string]any{"core": "2.0.0"}, "restarts": 4.0, "ok": true}}}})
	ix.Put(fleetindex.Doc{ThingName: "abz", Shadows: map[string]fleetindex.Shadow{"otaflow": {Reported: map[string]any{"software": map[string]any{"core": "1.9.0"}, "restarts": 0.0}}}})
	return ix
}

func search(t *testing.T, ix *fleetindex.Index, q string) []string {
	t.Helper()
	n, err := fleetindex.Parse(q)
	require.NoError(t, err, q)
	docs, _ := ix.Search(n, "", 100)
	var out []string
	for _, d := range docs {
		out = append(out, d.ThingName)
	}
	return out
}

// TestAWSExampleQueries runs the example queries of AWS's developer guide ("Example thing
// queries") against a fleet built to tell their meanings apart.
func TestAWSExampleQueries(t *testing.T) {
	ix := fleet()
	for q, want := range map[string][]string{
		"abc":                                        {"my-tv", "myThingName"}, // any field
		"thingName:myThingName":                      {"myThingName"},
		"thingName:my*":                              {"my-tv", "myThingName"},
		"thingName:*tv":                              {"my-tv"},
		"thingName:*y-t*":                            {"my-tv"},
		"thingName:ab?":                              {"aba", "abz"},
		"thingTypeName:aa":                           {"myThingName"},
		"thingGroupNames:a":                          {"myThingName"},
		"thingGroupNames:a*":                         {"myThingName"},
		"attributes.myAttribute:75":                  {"myThingName"},
		"attributes.myAttribute:[75 TO 80]":          {"my-tv", "myThingName"},
		"attributes.myAttribute:{75 TO 80]":          {"my-tv"},
		`attributes.serialNumber:["abcd" TO "abcf"]`: {"my-tv", "myThingName"},
		"attributes.myAttribute:i*t":                 {"aba"},
		"attributes.attr1:abc AND attributes.attr2<5 NOT attributes.attr3>10": {"my-tv"},
		"attributes.attr1:abc attributes.attr2<5":                             {"my-tv", "myThingName"}, // AND is the default
		"thingName:(tv* AND -plasma)":                                         {"tv-plasma"},            // "plasma" is a whole value
		"thingName:(tv* AND -tv-plasma)":                                      {},
		`thingName:(my* AND -"my-tv")`:                                        {"myThingName"},
		"thingName:(my* OR tv*) AND NOT connectivity.connected:true":          {"myThingName", "tv-plasma"},
		"connectivity.connected:true":                                         {"my-tv"},
		"connectivity.timestamp>1556649874000":                                {"my-tv"},
		"connectivity.timestamp>=1556649874000":                               {"my-tv", "tv-plasma"},
		"shadow.name.otaflow.reported.software.core:2.0.0":                    {"aba"},
		"shadow.name.otaflow.reported.restarts>2":                             {"aba"},
		"shadow.name.otaflow.reported.restarts:0":                             {"abz"},
		"shadow.name.otaflow.reported.restarts:0.0":                           {"abz"},
		"shadow.name.otaflow.reported.ok:true":                                {"aba"},
		"shadow.name.otaflow.reported.software.core:*":                        {"aba", "abz"},
		"THINGNAME:myThingName":                                               {}, // field names are case sensitive
		"thingName:MYTHINGNAME":                                               {"myThingName"},
		"*":                                                                   {"aba", "abz", "my-tv", "myThingName", "tv-plasma"},
		`attributes.myAttribute2:"i-am-it"`:                                   {"tv-plasma"},
		`thingName:my\-tv`:                                                    {"my-tv"},
	} {
		got := search(t, ix, q)
		slices.Sort(want)
		if len(want) == 0 {
			want = nil
		}
		require.Equal(t, want, got, q)
	}
}

func TestInvalidQueries(t *testing.T) {
	for q, want := range map[string]string{
		"":                                    "empty",
		"thingName:(a":                        "expected )",
		"attributes.a:[1 2]":                  "range",
		`thingName:"abc`:                      "not closed",
		"thingName:a@b":                       "not allowed",
		"thingName:*a AND thingGroupNames:*b": "one term",
		"a b c d e f g h i j k l m":           "13 terms",
		"thingName:":                          "needs a value",
		"AND":                                 "unexpected",
	} {
		_, err := fleetindex.Parse(q)
		var qe *fleetindex.QueryError
		require.ErrorAs(t, err, &qe, q)
		require.Contains(t, err.Error(), want, q)
	}
}

func TestAggregations(t *testing.T) {
	ix := fleetindex.New()
	for i := range 10 {
		ix.Put(fleetindex.Doc{ThingName: fmt.Sprintf("d%02d", i), Groups: []string{map[bool]string{true: "wave-1", false: "control"}[i < 4]},
			Shadows: map[string]fleetindex.Shadow{"health": {Reported: map[string]any{"restarts": float64(i), "version": fmt.Sprint("v", i%3)}}}})
	}
	all, err := fleetindex.Parse("*")
	require.NoError(t, err)
	wave, err := fleetindex.Parse("thingGroupNames:wave-1")
	require.NoError(t, err)
	st := ix.Stats(all, "shadow.name.health.reported.restarts", true)
	require.Equal(t, 10, st.Count)
	require.InDelta(t, 4.5, st.Average, 1e-9)
	require.InDelta(t, 45, st.Sum, 1e-9)
	require.InDelta(t, 0, st.Minimum, 1e-9)
	require.InDelta(t, 9, st.Maximum, 1e-9)
	require.InDelta(t, 285, st.SumOfSquares, 1e-9)
	require.InDelta(t, 8.25, st.Variance, 1e-9)
	st = ix.Stats(wave, "shadow.name.health.reported.restarts", true)
	require.Equal(t, 4, st.Count)
	require.InDelta(t, 1.5, st.Average, 1e-9)
	require.Equal(t, 10, ix.Stats(all, "shadow.name.health.reported.version", false).Count)
	p := ix.Percentiles(all, "shadow.name.health.reported.restarts", []float64{50, 90})
	require.InDelta(t, 4.5, p[50], 1e-9)
	require.InDelta(t, 8.1, p[90], 1e-9)
	require.Equal(t, 3, ix.Cardinality(all, "shadow.name.health.reported.version"))
	b := ix.Buckets(all, "shadow.name.health.reported.version", 2)
	require.Equal(t, []fleetindex.Bucket{{"v0", 4}, {"v1", 3}}, b)

	// Changes show at once: a thing moved out of the wave, one deleted.
	ix.Put(fleetindex.Doc{ThingName: "d00", Groups: []string{"control"}})
	ix.Delete("d01")
	require.Equal(t, 2, ix.Count(wave))
	require.Equal(t, 9, ix.Count(all))
}

// TestEveryThingWithoutAScan: the figures over every thing (the console's, at any fleet
// size) come from the postings, not from a scan, and agree with the same figures scanned; a
// page through every thing follows things coming and going.
func TestEveryThingWithoutAScan(t *testing.T) {
	ix := fleetindex.New()
	sites := []string{"berlin", "paris", "oslo"}
	want := map[string]int{}
	for i := range 500 {
		d := fleetindex.Doc{ThingName: fmt.Sprintf("dev-%04d", (i*7919)%500)}
		if i%4 != 0 {
			site := sites[i%3]
			d.Attributes = map[string]string{"site": site}
			want[site]++
		}
		ix.Put(d)
	}
	all, err := fleetindex.Parse("*")
	require.NoError(t, err)
	named, err := fleetindex.Parse("thingName:*")
	require.NoError(t, err)
	// The same figures over a query that needs a scan (every thing, said another way).
	scanned, err := fleetindex.Parse("thingName:dev-* OR NOT thingName:dev-*")
	require.NoError(t, err)
	for _, q := range []fleetindex.Node{all, named, scanned} {
		require.Equal(t, 500, ix.Count(q))
		require.Equal(t, 375, ix.Stats(q, "attributes.site", false).Count)
		require.Equal(t, 500, ix.Stats(q, "thingName", false).Count)
		buckets := ix.Buckets(q, "attributes.site", 10)
		got := map[string]int{}
		for _, b := range buckets {
			got[b.Key] = b.Count
		}
		require.Equal(t, want, got)
	}
	berlin, err := fleetindex.Parse("attributes.site:berlin")
	require.NoError(t, err)
	require.Equal(t, want["berlin"], ix.Count(berlin))

	page := func() []string {
		var names []string
		after := ""
		for {
			docs, more := ix.Search(all, after, 7)
			for _, d := range docs {
				names = append(names, d.ThingName)
			}
			if !more {
				return names
			}
			after = docs[len(docs)-1].ThingName
		}
	}
	names := page()
	require.Len(t, names, 500)
	require.True(t, slices.IsSorted(names))
	ix.Delete("dev-0003")
	ix.Put(fleetindex.Doc{ThingName: "dev-0003a"})
	names = page()
	require.Len(t, names, 500)
	require.NotContains(t, names, "dev-0003")
	require.Contains(t, names, "dev-0003a")
	require.Equal(t, want["berlin"], ix.Count(berlin))
}
