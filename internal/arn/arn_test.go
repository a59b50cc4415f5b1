package arn

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseTarget(t *testing.T) {
	for _, c := range []struct {
		in, typ, name, region, err string
	}{
		{in: "arn:aws:iot:us-east-1:123456789012:thing/dev-1", typ: TypeThing, name: "dev-1", region: "us-east-1"},
		{in: "arn:aws:iot:eu-west-1:123456789012:thinggroup/fleet", typ: TypeThingGroup, name: "fleet", region: "eu-west-1"},
		{in: "dev-2", typ: TypeThing, name: "dev-2"},
		{in: "", err: "empty target"},
		{in: "arn:aws:iot:us-east-1:1:job/j", err: "not a thing or thing-group ARN"},
		{in: "arn:aws:s3:::bucket/key", err: "not a thing or thing-group ARN"},
		{in: "arn:aws:iot:us-east-1:1:thing/", err: "not a thing or thing-group ARN"},
		{in: "arn:aws:iot", err: "not a thing or thing-group ARN"},
	} {
		got, err := ParseTarget(c.in)
		if c.err != "" {
			require.ErrorContains(t, err, c.err, c.in)
			continue
		}
		require.NoError(t, err, c.in)
		require.Equal(t, c.typ, got.Type, c.in)
		require.Equal(t, c.name, got.Name, c.in)
		require.Equal(t, c.region, got.ARN.Region, c.in)
	}
}

func TestBuildAndParse(t *testing.T) {
	s := IoT("us-east-1", "000000000000", TypeJob, "rollout-1")
	require.Equal(t, "arn:aws:iot:us-east-1:000000000000:job/rollout-1", s)
	a, err := Parse(s)
	require.NoError(t, err)
	require.Equal(t, s, a.String())
	require.Equal(t, "rollout-1", Name(s))
	require.Equal(t, "plain", Name("plain"))
	require.True(t, IsRole("arn:aws:iam::000000000000:role/signer"))
	require.False(t, IsRole("arn:aws:iot:us-east-1:0:thing/x"))
	require.False(t, IsRole("role/signer"))
}
