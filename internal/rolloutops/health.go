package rolloutops

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"

	"github.com/otaflow/otaflow/workflows/contract"
)

// EvaluateHealth judges a health gate's criteria once, through AWS IoT fleet indexing only
// (GetStatistics, GetPercentiles), so the same gate runs against AWS IoT with fleet indexing
// on: the updated cohort is the devices of the given waves' groups whose health record says
// they run the new version, the control cohort those of the later waves that do not.
func (a *Ops) EvaluateHealth(ctx context.Context, in contract.EvaluateHealthInput) (*contract.EvaluateHealthResult, error) {
	version := "shadow.name.health.reported.version:" + quoteTerm(in.Version)
	updated := groupsQuery(in.UpdatedGroups) + " AND " + version
	control := ""
	if len(in.ControlGroups) > 0 {
		control = groupsQuery(in.ControlGroups) + " AND NOT " + version
	}
	res := &contract.EvaluateHealthResult{}
	for _, c := range in.Criteria {
		u, un, err := a.statistic(ctx, updated, c, in.StaleBefore)
		if err != nil {
			return nil, err
		}
		var ctl float64
		var cn int
		if control != "" && c.MaxRatio > 0 {
			if ctl, cn, err = a.statistic(ctx, control, c, in.StaleBefore); err != nil {
				return nil, err
			}
		}
		v := c.Judge(u, un, ctl, cn, in.Waves)
		res.Values = append(res.Values, v)
		if v.Breached && res.Breach == "" {
			res.Breach = v.Note
		}
	}
	return res, nil
}

func groupsQuery(groups []string) string {
	q := make([]string, len(groups))
	for i, g := range groups {
		q[i] = quoteTerm(g)
	}
	return "thingGroupNames:(" + strings.Join(q, " OR ") + ")"
}

// quoteTerm makes a value one term of the query syntax.
func quoteTerm(v string) string { return `"` + strings.ReplaceAll(v, `"`, `\"`) + `"` }

// statistic is c's statistic over the devices query matches, and how many devices it
// stands on (those with a value of the metric).
func (a *Ops) statistic(ctx context.Context, query string, c contract.HealthCriterion, staleBefore int64) (float64, int, error) {
	field := c.Field()
	stats := func(q string) (*types.Statistics, error) {
		out, err := a.IoT.GetStatistics(ctx, &iot.GetStatisticsInput{QueryString: aws.String(q), AggregationField: aws.String(field)})
		if err != nil {
			return nil, indexError(err, field)
		}
		return out.Statistics, nil
	}
	all, err := stats(query)
	if err != nil {
		return 0, 0, err
	}
	n := int(all.Count)
	if n == 0 {
		return 0, 0, nil
	}
	switch c.Statistic {
	case "average":
		return aws.ToFloat64(all.Average), n, nil
	case "sum":
		return aws.ToFloat64(all.Sum), n, nil
	case "maximum":
		return aws.ToFloat64(all.Maximum), n, nil
	case "share", "stale":
		cond := fmt.Sprintf("%s>%v", field, c.Over)
		if c.Statistic == "stale" {
			cond = fmt.Sprintf("%s<%d", field, staleBefore)
		}
		over, err := stats(query + " AND " + cond)
		if err != nil {
			return 0, 0, err
		}
		return float64(over.Count) / float64(n), n, nil
	}
	p := c.Percent()
	out, err := a.IoT.GetPercentiles(ctx, &iot.GetPercentilesInput{QueryString: aws.String(query), AggregationField: aws.String(field), Percents: []float64{p}})
	if err != nil {
		return 0, 0, indexError(err, field)
	}
	if len(out.Percentiles) == 0 {
		return 0, 0, nil
	}
	return out.Percentiles[0].Value, n, nil
}

// indexError says what to do when fleet indexing cannot answer; one the operator must fix is
// not retried.
func indexError(err error, field string) error {
	var nf *types.ResourceNotFoundException
	var agg *types.InvalidAggregationException
	var q *types.InvalidQueryException
	switch {
	case errors.As(err, &nf):
		return invalidErr("fleet indexing is off: turn it on with the health shadow indexed (aws iot update-indexing-configuration; docs/health.md)", err)
	case errors.As(err, &agg):
		return invalidErr(fmt.Sprintf("%s is not indexed for aggregation: add it to the indexing configuration's customFields as a Number (docs/health.md)", field), err)
	case errors.As(err, &q):
		return invalidErr("the health gate's query was refused: "+err.Error(), err)
	}
	return err
}
