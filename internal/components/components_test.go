package components_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/components"
)

const sm = "aws.greengrass.StreamManager"

func TestResolve(t *testing.T) {
	c, err := components.Open(filepath.Join(t.TempDir(), "catalog.json"))
	require.NoError(t, err)
	for name, tc := range map[string]struct {
		req  map[string]string
		want map[string]string
	}{
		"unpinned: newest of everything that fits":     {map[string]string{sm: ""}, map[string]string{sm: "2.0.8", components.Nucleus: "2.1.1"}},
		"a pinned component bounds its dependency":     {map[string]string{sm: "2.0.7"}, map[string]string{sm: "2.0.7", components.Nucleus: "2.0.6"}},
		"a pinned nucleus picks a stream manager":      {map[string]string{components.Nucleus: "2.1.0", sm: ""}, map[string]string{sm: "2.0.8", components.Nucleus: "2.1.0"}},
		"nucleus alone, unpinned":                      {map[string]string{components.Nucleus: ""}, map[string]string{components.Nucleus: "2.1.1"}},
		"everything pinned and compatible stays as is": {map[string]string{components.Nucleus: "2.0.4", sm: "2.0.7"}, map[string]string{sm: "2.0.7", components.Nucleus: "2.0.4"}},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := c.Resolve(tc.req)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}

	_, err = c.Resolve(map[string]string{components.Nucleus: "2.1.0", sm: "2.0.7"})
	require.EqualError(t, err, "conflicting versions: aws.greengrass.StreamManager 2.0.7 supports aws.greengrass.Nucleus >=2.0.3 <2.1.0 only, not 2.1.0: update aws.greengrass.StreamManager to 2.0.8 or later")
	_, err = c.Resolve(map[string]string{"com.example.Missing": ""})
	require.ErrorContains(t, err, "not in the catalog")
	_, err = c.Resolve(map[string]string{components.Nucleus: "9.9.9"})
	require.ErrorContains(t, err, "known: 2.1.1, 2.1.0")
}

func TestAddPersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.json")
	c, err := components.Open(path)
	require.NoError(t, err)
	require.NoError(t, c.Add(components.Recipe{Name: components.Nucleus, Version: "2.1.2"}))
	require.ErrorContains(t, c.Add(components.Recipe{Name: components.Nucleus, Version: "2.1.2"}), "already in the catalog")
	require.ErrorContains(t, c.Add(components.Recipe{Name: "x", Version: "1"}), "not semver")
	require.ErrorContains(t, c.Add(components.Recipe{Name: "x", Version: "1.0.0", Dependencies: map[string]string{"y": "~>banana"}}), "invalid")

	c, err = components.Open(path)
	require.NoError(t, err)
	got, err := c.Resolve(map[string]string{components.Nucleus: ""})
	require.NoError(t, err)
	require.Equal(t, "2.1.2", got[components.Nucleus], "a newer patch is picked up")
	got, err = c.Resolve(map[string]string{sm: "2.0.8"})
	require.NoError(t, err)
	require.Equal(t, "2.1.2", got[components.Nucleus])
}
