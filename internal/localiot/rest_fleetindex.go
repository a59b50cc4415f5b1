package localiot

import (
	"cmp"
	"net/http"

	"github.com/otaflow/otaflow/internal/fleetindex"
)

func (s *Service) readIndexQuery(r *http.Request) (indexQuery, IndexingConfiguration, *fleetindex.Index, fleetindex.Node, error) {
	var q indexQuery
	if err := readJSON(r, &q); err != nil {
		return q, IndexingConfiguration{}, nil, nil, err
	}
	if q.QueryString == "" {
		return q, IndexingConfiguration{}, nil, nil, errorf(CodeInvalidRequest, "queryString is required (* matches every thing)")
	}
	cfg, ix, err := s.indexFor(q.IndexName)
	if err != nil {
		return q, cfg, nil, nil, err
	}
	n, err := parseQuery(q.QueryString)
	return q, cfg, ix, n, err
}

func (s *Service) readAggregation(r *http.Request, defaultField string, numeric bool) (*aggregation, error) {
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

func (s *Service) handleSearchIndex(r *http.Request) (any, error) {
	q, cfg, ix, n, err := s.readIndexQuery(r)
	if err != nil {
		return nil, err
	}
	max := q.MaxResults
	if max == 0 {
		max = 500
	}
	if max < 1 || max > 500 {
		return nil, errorf(CodeInvalidRequest, "maxResults must be from 1 to 500")
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

func (s *Service) handleGetStatistics(r *http.Request) (any, error) {
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

func (s *Service) handleGetPercentiles(r *http.Request) (any, error) {
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
			return nil, errorf(CodeInvalidRequest, "percents must be from 0 to 100, not %v", p)
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

func (s *Service) handleGetCardinality(r *http.Request) (any, error) {
	a, err := s.readAggregation(r, "thingName", false)
	if err != nil {
		return nil, err
	}
	return map[string]any{"cardinality": a.ix.Cardinality(a.n, a.field)}, nil
}

func (s *Service) handleGetBucketsAggregation(r *http.Request) (any, error) {
	a, err := s.readAggregation(r, "", false)
	if err != nil {
		return nil, err
	}
	q := a.q
	if q.BucketsAggregationType == nil || q.BucketsAggregationType.TermsAggregation == nil {
		return nil, errorf(CodeInvalidRequest, "bucketsAggregationType.termsAggregation is required")
	}
	max := q.BucketsAggregationType.TermsAggregation.MaxBuckets
	if max == 0 {
		max = 10
	}
	if max < 1 || max > 10000 {
		return nil, errorf(CodeInvalidRequest, "maxBuckets must be from 1 to 10000")
	}
	buckets := a.ix.Buckets(a.n, a.field, max)
	out := make([]map[string]any, len(buckets))
	for i, b := range buckets {
		out[i] = map[string]any{"keyValue": b.Key, "count": b.Count}
	}
	return map[string]any{"totalCount": a.ix.Count(a.n), "buckets": out}, nil
}

func (s *Service) handleUpdateIndexingConfiguration(r *http.Request) (any, error) {
	var body struct {
		Thing *IndexingConfiguration `json:"thingIndexingConfiguration"`
		Group *struct {
			Mode string `json:"thingGroupIndexingMode"`
		} `json:"thingGroupIndexingConfiguration"`
	}
	if err := readJSON(r, &body); err != nil {
		return nil, err
	}
	if body.Group != nil && body.Group.Mode != "OFF" {
		return nil, errorf(CodeInvalidRequest, "otaflow indexes things only: thingGroupIndexingMode must be OFF")
	}
	if body.Thing != nil {
		if err := s.UpdateIndexingConfiguration(*body.Thing); err != nil {
			return nil, err
		}
	}
	return map[string]any{}, nil
}

func (s *Service) handleGetIndexingConfiguration(r *http.Request) (any, error) {
	return map[string]any{"thingIndexingConfiguration": s.GetIndexingConfiguration(),
		"thingGroupIndexingConfiguration": map[string]any{"thingGroupIndexingMode": "OFF"}}, nil
}

func (s *Service) handleDescribeIndex(r *http.Request) (any, error) {
	cfg, _, err := s.indexFor(r.PathValue("indexName"))
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
	return map[string]any{"indexName": ThingsIndex, "indexStatus": "ACTIVE", "schema": schema}, nil
}

func (s *Service) handleListIndices(r *http.Request) (any, error) {
	names := []string{}
	if _, ix := s.index.current(); ix != nil {
		names = append(names, ThingsIndex)
	}
	return map[string]any{"indexNames": names}, nil
}
