package rest

import (
	"cmp"
	"encoding/json"
	"net/http"

	"github.com/otaflow/otaflow/internal/fleetindex"
	"github.com/otaflow/otaflow/internal/localiot"
)

func (s api) readIndexQuery(r *http.Request) (indexQuery, localiot.IndexingConfiguration, *fleetindex.Index, fleetindex.Node, error) {
	var q indexQuery
	if err := readJSON(r, &q); err != nil {
		return q, localiot.IndexingConfiguration{}, nil, nil, err
	}
	if q.QueryString == "" {
		return q, localiot.IndexingConfiguration{}, nil, nil, localiot.Errorf(localiot.CodeInvalidRequest, "queryString is required (* matches every thing)")
	}
	cfg, ix, err := s.IndexFor(q.IndexName)
	if err != nil {
		return q, cfg, nil, nil, err
	}
	n, err := localiot.ParseQuery(q.QueryString)
	return q, cfg, ix, n, err
}

func (s api) readAggregation(r *http.Request, defaultField string, numeric bool) (*aggregation, error) {
	q, cfg, ix, n, err := s.readIndexQuery(r)
	if err != nil {
		return nil, err
	}
	field := cmp.Or(q.AggregationField, defaultField)
	typ, err := aggregationField(cfg, field, numeric)
	if err != nil {
		return nil, err
	}
	return &aggregation{q: q, ix: ix, n: n, field: field, typ: typ}, nil
}

func (s api) handleSearchIndex(r *http.Request) (any, error) {
	q, cfg, ix, n, err := s.readIndexQuery(r)
	if err != nil {
		return nil, err
	}
	max := q.MaxResults
	if max == 0 {
		max = 500
	}
	if max < 1 || max > 500 {
		return nil, localiot.Errorf(localiot.CodeInvalidRequest, "maxResults must be from 1 to 500")
	}
	docs, more := ix.Search(n, q.NextToken, max)
	things := make([]map[string]any, 0, len(docs))
	for _, d := range docs {
		things = append(things, thingDocument(cfg, d))
	}
	out := map[string]any{"things": things, "thingGroups": []any{}}
	if more && len(docs) > 0 {
		out["nextToken"] = docs[len(docs)-1].ThingName
	}
	return out, nil
}

func (s api) handleGetStatistics(r *http.Request) (any, error) {
	a, err := s.readAggregation(r, "thingName", false) // no field: AWS counts the things
	if err != nil {
		return nil, err
	}
	st := a.ix.Stats(a.n, a.field, a.typ == "Number")
	out := map[string]any{"count": st.Count}
	if st.Numeric {
		for k, v := range map[string]float64{"average": st.Average, "sum": st.Sum, "minimum": st.Minimum, "maximum": st.Maximum,
			"sumOfSquares": st.SumOfSquares, "variance": st.Variance, "stdDeviation": st.StdDeviation} {
			out[k] = v
		}
	}
	return map[string]any{"statistics": out}, nil
}

func (s api) handleGetPercentiles(r *http.Request) (any, error) {
	a, err := s.readAggregation(r, "", true)
	if err != nil {
		return nil, err
	}
	percents := a.q.Percents
	if len(percents) == 0 {
		percents = []float64{1, 5, 25, 50, 75, 95, 99} // AWS's default
	}
	for _, p := range percents {
		if p < 0 || p > 100 {
			return nil, localiot.Errorf(localiot.CodeInvalidRequest, "percents must be from 0 to 100, not %v", p)
		}
	}
	vals := a.ix.Percentiles(a.n, a.field, percents)
	out := []map[string]any{}
	for _, p := range percents {
		if v, ok := vals[p]; ok {
			out = append(out, map[string]any{"percent": p, "value": v})
		}
	}
	return map[string]any{"percentiles": out}, nil
}

func (s api) handleGetCardinality(r *http.Request) (any, error) {
	a, err := s.readAggregation(r, "thingName", false)
	if err != nil {
		return nil, err
	}
	return map[string]any{"cardinality": a.ix.Cardinality(a.n, a.field)}, nil
}

func (s api) handleGetBucketsAggregation(r *http.Request) (any, error) {
	a, err := s.readAggregation(r, "", false)
	if err != nil {
		return nil, err
	}
	q := a.q
	if q.BucketsAggregationType == nil || q.BucketsAggregationType.TermsAggregation == nil {
		return nil, localiot.Errorf(localiot.CodeInvalidRequest, "bucketsAggregationType.termsAggregation is required")
	}
	max := q.BucketsAggregationType.TermsAggregation.MaxBuckets
	if max == 0 {
		max = 10
	}
	if max < 1 || max > 10000 {
		return nil, localiot.Errorf(localiot.CodeInvalidRequest, "maxBuckets must be from 1 to 10000")
	}
	buckets := a.ix.Buckets(a.n, a.field, max)
	out := make([]map[string]any, len(buckets))
	for i, b := range buckets {
		out[i] = map[string]any{"keyValue": b.Key, "count": b.Count}
	}
	return map[string]any{"totalCount": a.ix.Count(a.n), "buckets": out}, nil
}

func (s api) handleUpdateIndexingConfiguration(r *http.Request) (any, error) {
	var body struct {
		Thing *localiot.IndexingConfiguration `json:"thingIndexingConfiguration"`
		Group *struct {
			Mode string `json:"thingGroupIndexingMode"`
		} `json:"thingGroupIndexingConfiguration"`
	}
	if err := readJSON(r, &body); err != nil {
		return nil, err
	}
	if body.Group != nil && body.Group.Mode != "OFF" {
		return nil, localiot.Errorf(localiot.CodeInvalidRequest, "otaflow indexes things only: thingGroupIndexingMode must be OFF")
	}
	if body.Thing != nil {
		if err := s.UpdateIndexingConfiguration(*body.Thing); err != nil {
			return nil, err
		}
	}
	return map[string]any{}, nil
}

func (s api) handleGetIndexingConfiguration(r *http.Request) (any, error) {
	return map[string]any{"thingIndexingConfiguration": s.GetIndexingConfiguration(),
		"thingGroupIndexingConfiguration": map[string]any{"thingGroupIndexingMode": "OFF"}}, nil
}

func (s api) handleDescribeIndex(r *http.Request) (any, error) {
	cfg, _, err := s.IndexFor(r.PathValue("indexName"))
	if err != nil {
		return nil, err
	}
	schema := "REGISTRY"
	if cfg.ThingIndexingMode == "REGISTRY_AND_SHADOW" {
		schema = "REGISTRY_AND_SHADOW"
	}
	if cfg.ThingConnectivityIndexingMode == "STATUS" {
		schema += "_AND_CONNECTIVITY_STATUS"
	}
	return map[string]any{"indexName": localiot.ThingsIndex, "indexStatus": "ACTIVE", "schema": schema}, nil
}

func (s api) handleListIndices(r *http.Request) (any, error) {
	names := []string{}
	if s.IndexOn() {
		names = append(names, localiot.ThingsIndex)
	}
	return map[string]any{"indexNames": names}, nil
}

type indexQuery struct {
	IndexName              string          `json:"indexName"`
	QueryString            string          `json:"queryString"`
	NextToken              string          `json:"nextToken"`
	MaxResults             int             `json:"maxResults"`
	QueryVersion           string          `json:"queryVersion"`
	AggregationField       string          `json:"aggregationField"`
	Percents               []float64       `json:"percents"`
	BucketsAggregationType *bucketsAggType `json:"bucketsAggregationType"`
}

type bucketsAggType struct {
	TermsAggregation *struct {
		MaxBuckets int `json:"maxBuckets"`
	} `json:"termsAggregation"`
}

// aggregation is an aggregation request, read and checked: its query, its field (the
// default when none is given) and the field's type.
type aggregation struct {
	q          indexQuery
	ix         *fleetindex.Index
	n          fleetindex.Node
	field, typ string
}

// aggregationField checks an aggregation's field: indexed (managed or custom) and, for
// numeric aggregations, a Number.
func aggregationField(cfg localiot.IndexingConfiguration, field string, numeric bool) (string, error) {
	if field == "" {
		return "", localiot.Errorf(localiot.CodeInvalidAggregation, "aggregationField is required")
	}
	typ := localiot.FieldType(cfg, field)
	if typ == "" {
		return "", localiot.Errorf(localiot.CodeInvalidAggregation, "%s is not an indexed field: add it to customFields (update-indexing-configuration) with its type", field)
	}
	if numeric && typ != "Number" {
		return "", localiot.Errorf(localiot.CodeInvalidAggregation, "%s is a %s field; this aggregation needs a Number field", field, typ)
	}
	return typ, nil
}

// thingDocument is AWS's ThingDocument for d.
func thingDocument(cfg localiot.IndexingConfiguration, d fleetindex.Doc) map[string]any {
	doc := map[string]any{"thingName": d.ThingName, "thingId": d.ThingID, "attributes": d.Attributes, "thingGroupNames": d.Groups}
	if d.Attributes == nil {
		doc["attributes"] = map[string]string{}
	}
	if d.Groups == nil {
		doc["thingGroupNames"] = []string{}
	}
	if d.ThingTypeName != "" {
		doc["thingTypeName"] = d.ThingTypeName
	}
	if len(d.Shadows) > 0 {
		named := map[string]any{}
		for name, sh := range d.Shadows {
			named[name] = map[string]any{"reported": sh.Reported, "desired": sh.Desired, "version": sh.Version}
		}
		raw, _ := json.Marshal(map[string]any{"name": named})
		doc["shadow"] = string(raw)
	}
	if cfg.ThingConnectivityIndexingMode == "STATUS" && d.Connected != nil {
		doc["connectivity"] = map[string]any{"connected": *d.Connected, "timestamp": d.ConnectedAt}
	}
	return doc
}
