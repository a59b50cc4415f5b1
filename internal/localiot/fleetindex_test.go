package localiot_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/mqtttest"
	"github.com/otaflow/otaflow/internal/pgtest"
)

// TestFleetIndexThroughAWSSDK: fleet indexing as AWS serves it, through aws-sdk-go-v2: off
// until configured, then registry, groups and named shadows searchable with AWS's query
// syntax; aggregations on declared fields; changes (an attribute, a group, a shadow, a
// deleted thing) show at once; every answer checked against the AWS IoT service model.
func TestFleetIndexThroughAWSSDK(t *testing.T) {
	ctx := context.Background()
	svc := openService(t, t.TempDir())
	defer svc.Close()
	c := iotClient(serve(t, svc), testCreds)

	_, err := c.SearchIndex(ctx, &iot.SearchIndexInput{QueryString: aws.String("*")})
	var nf *types.ResourceNotFoundException
	require.ErrorAs(t, err, &nf, "the index is off until configured, as on AWS")
	require.Contains(t, err.Error(), "update-indexing-configuration")

	_, err = c.CreateThingGroup(ctx, &iot.CreateThingGroupInput{ThingGroupName: aws.String("wave-1")})
	require.NoError(t, err)
	for i := range 10 {
		name := fmt.Sprintf("dev-%02d", i)
		_, err := c.CreateThing(ctx, &iot.CreateThingInput{ThingName: aws.String(name),
			AttributePayload: &types.AttributePayload{Attributes: map[string]string{"site": map[bool]string{true: "berlin", false: "paris"}[i%2 == 0]}}})
		require.NoError(t, err)
		_, err = svc.UpdateShadow(name, "health", []byte(fmt.Sprintf(`{"state":{"reported":{"restarts":%d,"core":"1.0.0"}}}`, i)))
		require.NoError(t, err)
		if i < 4 {
			_, err = c.AddThingToThingGroup(ctx, &iot.AddThingToThingGroupInput{ThingGroupName: aws.String("wave-1"), ThingName: aws.String(name)})
			require.NoError(t, err)
		}
	}

	_, err = c.UpdateIndexingConfiguration(ctx, &iot.UpdateIndexingConfigurationInput{ThingIndexingConfiguration: &types.ThingIndexingConfiguration{
		ThingIndexingMode: types.ThingIndexingModeRegistryAndShadow, NamedShadowIndexingMode: types.NamedShadowIndexingModeOn,
		Filter:       &types.IndexingFilter{NamedShadowNames: []string{"health"}},
		CustomFields: []types.Field{{Name: aws.String("shadow.name.health.reported.restarts"), Type: types.FieldTypeNumber}, {Name: aws.String("attributes.site"), Type: types.FieldTypeString}},
	}})
	require.NoError(t, err)
	cfg, err := c.GetIndexingConfiguration(ctx, &iot.GetIndexingConfigurationInput{})
	require.NoError(t, err)
	require.Equal(t, types.ThingIndexingModeRegistryAndShadow, cfg.ThingIndexingConfiguration.ThingIndexingMode)
	require.NotEmpty(t, cfg.ThingIndexingConfiguration.ManagedFields)
	idx, err := c.DescribeIndex(ctx, &iot.DescribeIndexInput{IndexName: aws.String("AWS_Things")})
	require.NoError(t, err)
	require.Equal(t, types.IndexStatusActive, idx.IndexStatus)

	search := func(q string) []string {
		t.Helper()
		var names []string
		var token *string
		for {
			out, err := c.SearchIndex(ctx, &iot.SearchIndexInput{QueryString: aws.String(q), MaxResults: aws.Int32(3), NextToken: token})
			require.NoError(t, err, q)
			for _, d := range out.Things {
				names = append(names, aws.ToString(d.ThingName))
			}
			if out.NextToken == nil {
				return names
			}
			token = out.NextToken
		}
	}
	require.Len(t, search("*"), 10, "pages of 3")
	require.Equal(t, []string{"dev-00", "dev-02"}, search("thingGroupNames:wave-1 AND attributes.site:berlin"))
	require.Equal(t, []string{"dev-07", "dev-08", "dev-09"}, search("shadow.name.health.reported.restarts>6"))
	out, err := c.SearchIndex(ctx, &iot.SearchIndexInput{QueryString: aws.String("thingName:dev-03")})
	require.NoError(t, err)
	require.Equal(t, []string{"wave-1"}, out.Things[0].ThingGroupNames)
	var shadow map[string]any
	require.NoError(t, json.Unmarshal([]byte(aws.ToString(out.Things[0].Shadow)), &shadow))
	require.EqualValues(t, 3, shadow["name"].(map[string]any)["health"].(map[string]any)["reported"].(map[string]any)["restarts"])

	st, err := c.GetStatistics(ctx, &iot.GetStatisticsInput{QueryString: aws.String("thingGroupNames:wave-1"), AggregationField: aws.String("shadow.name.health.reported.restarts")})
	require.NoError(t, err)
	require.EqualValues(t, 4, st.Statistics.Count)
	require.InDelta(t, 1.5, aws.ToFloat64(st.Statistics.Average), 1e-9)
	require.InDelta(t, 3, aws.ToFloat64(st.Statistics.Maximum), 1e-9)
	all, err := c.GetStatistics(ctx, &iot.GetStatisticsInput{QueryString: aws.String("*")})
	require.NoError(t, err)
	require.EqualValues(t, 10, all.Statistics.Count, "no field: the things are counted")
	pc, err := c.GetPercentiles(ctx, &iot.GetPercentilesInput{QueryString: aws.String("*"), AggregationField: aws.String("shadow.name.health.reported.restarts"), Percents: []float64{50}})
	require.NoError(t, err)
	require.InDelta(t, 4.5, pc.Percentiles[0].Value, 1e-9)
	card, err := c.GetCardinality(ctx, &iot.GetCardinalityInput{QueryString: aws.String("*"), AggregationField: aws.String("attributes.site")})
	require.NoError(t, err)
	require.EqualValues(t, 2, card.Cardinality)
	bk, err := c.GetBucketsAggregation(ctx, &iot.GetBucketsAggregationInput{QueryString: aws.String("*"), AggregationField: aws.String("attributes.site"),
		BucketsAggregationType: &types.BucketsAggregationType{TermsAggregation: &types.TermsAggregation{MaxBuckets: aws.Int32(5)}}})
	require.NoError(t, err)
	require.EqualValues(t, 10, bk.TotalCount)
	require.Len(t, bk.Buckets, 2)

	// Errors as AWS gives them.
	_, err = c.GetStatistics(ctx, &iot.GetStatisticsInput{QueryString: aws.String("*"), AggregationField: aws.String("shadow.name.health.reported.core")})
	var agg *types.InvalidAggregationException
	require.ErrorAs(t, err, &agg, "an undeclared field")
	_, err = c.GetPercentiles(ctx, &iot.GetPercentilesInput{QueryString: aws.String("*"), AggregationField: aws.String("attributes.site")})
	require.ErrorAs(t, err, &agg, "percentiles of a string")
	_, err = c.SearchIndex(ctx, &iot.SearchIndexInput{QueryString: aws.String("thingName:(a")})
	var iq *types.InvalidQueryException
	require.ErrorAs(t, err, &iq)

	// Changes show at once.
	_, err = c.RemoveThingFromThingGroup(ctx, &iot.RemoveThingFromThingGroupInput{ThingGroupName: aws.String("wave-1"), ThingName: aws.String("dev-00")})
	require.NoError(t, err)
	_, err = c.UpdateThing(ctx, &iot.UpdateThingInput{ThingName: aws.String("dev-01"), AttributePayload: &types.AttributePayload{Attributes: map[string]string{"site": "berlin"}, Merge: true}})
	require.NoError(t, err)
	_, err = svc.UpdateShadow("dev-09", "health", []byte(`{"state":{"reported":{"restarts":0}}}`))
	require.NoError(t, err)
	_, err = c.DeleteThing(ctx, &iot.DeleteThingInput{ThingName: aws.String("dev-08")})
	require.NoError(t, err)
	require.Equal(t, []string{"dev-01", "dev-02"}, search("thingGroupNames:wave-1 AND attributes.site:berlin"))
	require.Equal(t, []string{"dev-07"}, search("shadow.name.health.reported.restarts>6"))
	_, err = c.DeleteThingGroup(ctx, &iot.DeleteThingGroupInput{ThingGroupName: aws.String("wave-1")})
	require.NoError(t, err)
	require.Empty(t, search("thingGroupNames:wave-1"))

	_, err = c.UpdateIndexingConfiguration(ctx, &iot.UpdateIndexingConfigurationInput{ThingIndexingConfiguration: &types.ThingIndexingConfiguration{ThingIndexingMode: types.ThingIndexingModeOff}})
	require.NoError(t, err)
	_, err = c.SearchIndex(ctx, &iot.SearchIndexInput{QueryString: aws.String("*")})
	require.ErrorAs(t, err, &nf)
}

// TestFleetIndexSurvivesReopen: the configuration is kept, and the index is rebuilt from the
// store when the service starts.
func TestFleetIndexSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	svc := openService(t, dir)
	c := iotClient(serve(t, svc), testCreds)
	_, err := c.UpdateIndexingConfiguration(ctx, &iot.UpdateIndexingConfigurationInput{ThingIndexingConfiguration: &types.ThingIndexingConfiguration{
		ThingIndexingMode: types.ThingIndexingModeRegistry}})
	require.NoError(t, err)
	_, err = c.CreateThing(ctx, &iot.CreateThingInput{ThingName: aws.String("kept")})
	require.NoError(t, err)
	require.NoError(t, svc.Close())

	svc = openService(t, dir)
	defer svc.Close()
	c = iotClient(serve(t, svc), testCreds)
	out, err := c.SearchIndex(ctx, &iot.SearchIndexInput{QueryString: aws.String("thingName:kep*")})
	require.NoError(t, err)
	require.Len(t, out.Things, 1)
}

// TestFleetIndexAcrossReplicas: on PostgreSQL, what one replica changes (a configuration, a
// thing, a shadow) reaches the other replica's index within moments.
func TestFleetIndexAcrossReplicas(t *testing.T) {
	url := pgtest.DB(t)
	open := func() *localiot.Service {
		svc, err := localiot.Open(localiot.Options{PostgresURL: url, ArtifactDir: t.TempDir(), Logger: zerolog.Nop()})
		require.NoError(t, err)
		t.Cleanup(func() { svc.Close() })
		return svc
	}
	a, b := open(), open()
	require.NoError(t, a.UpdateIndexingConfiguration(localiot.HealthIndexing()))
	search := func(svc *localiot.Service, q string) int {
		n, err := svc.CountIndex(q)
		if err != nil {
			return -1
		}
		return n
	}
	require.Eventually(t, func() bool { return search(b, "*") == 0 }, 10*time.Second, 20*time.Millisecond, "b turned its index on")
	_, err := a.CreateThing("dev-1", map[string]string{"site": "berlin"})
	require.NoError(t, err)
	_, err = a.UpdateShadow("dev-1", "health", []byte(`{"state":{"reported":{"restarts":3}}}`))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return search(b, "attributes.site:berlin AND shadow.name.health.reported.restarts:3") == 1
	},
		10*time.Second, 20*time.Millisecond, "a's writes reach b's index")
	require.NoError(t, b.DeleteThing("dev-1", 0))
	require.Eventually(t, func() bool { return search(a, "*") == 0 }, 10*time.Second, 20*time.Millisecond, "and b's reach a's")
}

// TestConnectivityIsIndexed: with thingConnectivityIndexingMode STATUS, the broker's lifecycle
// events (AWS's $aws/events/presence/…, which the embedded broker publishes) keep
// connectivity.connected current.
func TestConnectivityIsIndexed(t *testing.T) {
	b := mqtttest.Embedded(t)
	svc := openService(t, t.TempDir())
	defer svc.Close()
	servePlane(t, svc, b.URL, "dev-1", "dev-2")
	cfg := localiot.HealthIndexing()
	cfg.ThingConnectivityIndexingMode = "STATUS"
	require.NoError(t, svc.UpdateIndexingConfiguration(cfg))
	count := func(q string) int {
		n, err := svc.CountIndex(q)
		require.NoError(t, err)
		return n
	}
	dev := connectDevice(t, b, "dev-1")
	require.Eventually(t, func() bool { return count("connectivity.connected:true") == 1 }, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, 0, count("thingName:dev-2 AND connectivity.connected:*"), "a device never seen has no connectivity")
	dev.client.Disconnect(100)
	require.Eventually(t, func() bool { return count("connectivity.connected:false AND thingName:dev-1") == 1 }, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, 1, count("connectivity.timestamp>0"))
}
