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
	out := &searchIndexResponse{Things: make([]thingDoc, 0, len(docs)), ThingGroups: []struct{}{}}
	for _, d := range docs {
		out.Things = append(out.Things, thingDocument(cfg, d))
	}
	if more && len(docs) > 0 {
		out.NextToken = docs[len(docs)-1].ThingName
	}
	return out, nil
}

type searchIndexResponse struct {
	Things []thingDoc `json:"things"`
	// ThingGroups is always empty: otaflow indexes things only.
	ThingGroups []struct{} `json:"thingGroups"`
	paged
}

func (s api) handleGetStatistics(r *http.Request) (any, error) {
	a, err := s.readAggregation(r, "thingName", false) // no field: AWS counts the things
	if err != nil {
		return nil, err
	}
	st := a.ix.Stats(a.n, a.field, a.typ == "Number")
	out := &getStatisticsResponse{}
	out.Statistics.Count = st.Count
	if st.Numeric {
		out.Statistics.NumericStatistics = &NumericStatistics{Average: st.Average, Sum: st.Sum, Minimum: st.Minimum,
			Maximum: st.Maximum, SumOfSquares: st.SumOfSquares, Variance: st.Variance, StdDeviation: st.StdDeviation}
	}
	return out, nil
}

type getStatisticsResponse struct {
	Statistics struct {
		Count int `json:"count"`
		// NumericStatistics are there for a Number field only (an exported type: json promotes
		// the fields of an embedded pointer to it).
		*NumericStatistics
	} `json:"statistics"`
}

type NumericStatistics struct {
	Average      float64 `json:"average"`
	Sum          float64 `json:"sum"`
	Minimum      float64 `json:"minimum"`
	Maximum      float64 `json:"maximum"`
	SumOfSquares float64 `json:"sumOfSquares"`
	Variance     float64 `json:"variance"`
	StdDeviation float64 `json:"stdDeviation"`
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
	out := &getPercentilesResponse{Percentiles: []percentPair{}}
	for _, p := range percents {
		if v, ok := vals[p]; ok {
			out.Percentiles = append(out.Percentiles, percentPair{Percent: p, Value: v})
		}
	}
	return out, nil
}

type getPercentilesResponse struct {
	Percentiles []percentPair `json:"percentiles"`
}

type percentPair struct {
	Percent float64 `json:"percent"`
	Value   float64 `json:"value"`
}

func (s api) handleGetCardinality(r *http.Request) (any, error) {
	a, err := s.readAggregation(r, "thingName", false)
	if err != nil {
		return nil, err
	}
	return &getCardinalityResponse{Cardinality: a.ix.Cardinality(a.n, a.field)}, nil
}

type getCardinalityResponse struct {
	Cardinality int `json:"cardinality"`
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
	out := &getBucketsAggregationResponse{TotalCount: a.ix.Count(a.n), Buckets: make([]bucket, len(buckets))}
	for i, b := range buckets {
		out.Buckets[i] = bucket{KeyValue: b.Key, Count: b.Count}
	}
	return out, nil
}

type getBucketsAggregationResponse struct {
	TotalCount int      `json:"totalCount"`
	Buckets    []bucket `json:"buckets"`
}

type bucket struct {
	KeyValue string `json:"keyValue"`
	Count    int    `json:"count"`
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
	return empty{}, nil
}

func (s api) handleGetIndexingConfiguration(r *http.Request) (any, error) {
	out := &getIndexingConfigurationResponse{Thing: s.GetIndexingConfiguration()}
	out.Group.Mode = "OFF"
	return out, nil
}

type getIndexingConfigurationResponse struct {
	Thing localiot.IndexingConfiguration `json:"thingIndexingConfiguration"`
	Group struct {
		Mode string `json:"thingGroupIndexingMode"`
	} `json:"thingGroupIndexingConfiguration"`
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
	return &describeIndexResponse{IndexName: localiot.ThingsIndex, IndexStatus: "ACTIVE", Schema: schema}, nil
}

type describeIndexResponse struct {
	IndexName   string `json:"indexName"`
	IndexStatus string `json:"indexStatus"`
	Schema      string `json:"schema"`
}

func (s api) handleListIndices(r *http.Request) (any, error) {
	out := &listIndicesResponse{IndexNames: []string{}}
	if s.IndexOn() {
		out.IndexNames = append(out.IndexNames, localiot.ThingsIndex)
	}
	return out, nil
}

type listIndicesResponse struct {
	IndexNames []string `json:"indexNames"`
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

// thingDoc is AWS's ThingDocument.
type thingDoc struct {
	ThingName       string            `json:"thingName"`
	ThingID         string            `json:"thingId"`
	ThingTypeName   string            `json:"thingTypeName,omitempty"`
	Attributes      map[string]string `json:"attributes"`
	ThingGroupNames []string          `json:"thingGroupNames"`
	// Shadow is the indexed shadows as a JSON string, as AWS sends it.
	Shadow       string `json:"shadow,omitempty"`
	Connectivity *struct {
		Connected bool  `json:"connected"`
		Timestamp int64 `json:"timestamp"`
	} `json:"connectivity,omitempty"`
}

// thingDocument is AWS's ThingDocument for d.
func thingDocument(cfg localiot.IndexingConfiguration, d fleetindex.Doc) thingDoc {
	doc := thingDoc{ThingName: d.ThingName, ThingID: d.ThingID, ThingTypeName: d.ThingTypeName,
		Attributes: orEmpty(d.Attributes), ThingGroupNames: d.Groups}
	if doc.ThingGroupNames == nil {
		doc.ThingGroupNames = []string{}
	}
	if len(d.Shadows) > 0 {
		// The shadow's own document is free-form JSON, kept as the device reported it.
		named := map[string]any{}
		for name, sh := range d.Shadows {
			named[name] = map[string]any{"reported": sh.Reported, "desired": sh.Desired, "version": sh.Version}
		}
		raw, _ := json.Marshal(map[string]any{"name": named})
		doc.Shadow = string(raw)
	}
	if cfg.ThingConnectivityIndexingMode == "STATUS" && d.Connected != nil {
		doc.Connectivity = &struct {
			Connected bool  `json:"connected"`
			Timestamp int64 `json:"timestamp"`
		}{*d.Connected, d.ConnectedAt}
	}
	return doc
}
