package bench

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/otaflow/otaflow/internal/iotclient"
	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/localiot/rest"
	"github.com/otaflow/otaflow/internal/pgserver"
	"github.com/otaflow/otaflow/internal/rolloutops"
	"github.com/otaflow/otaflow/workflows/contract"
)

// Gate is one health gate evaluation at a fleet size on a store: the worker's activity, through
// aws-sdk-go-v2 and the REST API, against the jobs service's fleet index.
type Gate struct {
	Things int    `json:"things"`
	Store  string `json:"jobsStore"`
	// PopulateSeconds registered the things, their groups and health shadows;
	// IndexBuildSeconds built the index from the store (a restart's cost).
	PopulateSeconds   float64 `json:"populateSeconds"`
	IndexBuildSeconds float64 `json:"indexBuildSeconds"`
	// EvaluateMs is the median of five evaluations of the default criteria plus one relative
	// to the control cohort (eight aggregations).
	EvaluateMs float64 `json:"evaluateMs"`
}

// gateFigure measures one gate evaluation at n things: 4 waves, half of the first two updated,
// a health shadow on every thing.
func gateFigure(ctx context.Context, o *Options, n int, postgres bool) (*Gate, error) {
	dir, err := os.MkdirTemp("", "otaflow-bench-gate-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	jo := localiot.Options{Path: filepath.Join(dir, "jobs.db"), Logger: zerolog.Nop(), NoAWSQuotas: true}
	g := &Gate{Things: n, Store: "bbolt"}
	if postgres {
		if o.PostgresURL == "" {
			return nil, fmt.Errorf("the gate on PostgreSQL needs --postgres")
		}
		if jo.PostgresURL, err = pgserver.CreateDatabase(ctx, o.PostgresURL, fmt.Sprintf("bench_gate_%d_%d", n, time.Now().UnixNano())); err != nil {
			return nil, err
		}
		jo.ArtifactDir, g.Store = filepath.Join(dir, "artifacts"), "postgres"
	}
	svc, err := localiot.Open(jo)
	if err != nil {
		return nil, err
	}
	defer svc.Close()
	o.say("gate: registering %d things with health shadows on %s", n, g.Store)
	start := time.Now()
	groups := []string{"gate-w1", "gate-w2", "gate-w3", "gate-w4"}
	for _, grp := range groups {
		if _, err := svc.CreateThingGroup(grp, "", localiot.GroupProperties{}); err != nil {
			return nil, err
		}
	}
	err = populate(n, func(i int) error {
		name := fmt.Sprintf("gate-%07d", i)
		if _, err := svc.CreateThing(name, nil); err != nil {
			return err
		}
		if err := svc.AddThingToThingGroup(groups[i%4], name); err != nil {
			return err
		}
		version := "1.0.0"
		if i%4 < 2 && i%2 == 0 {
			version = "2.0.0"
		}
		doc := fmt.Sprintf(`{"state":{"reported":{"version":%q,"reportedAt":%d,"restarts":%d,"bootsSinceUpdate":0,"healthCheckFailures":0}}}`,
			version, time.Now().Unix(), i%3)
		_, err := svc.UpdateShadow(name, "health", []byte(doc))
		return err
	})
	if err != nil {
		return nil, err
	}
	g.PopulateSeconds = time.Since(start).Seconds()
	start = time.Now()
	if err := svc.UpdateIndexingConfiguration(localiot.HealthIndexing()); err != nil {
		return nil, err
	}
	g.IndexBuildSeconds = time.Since(start).Seconds()

	srv := httptest.NewServer(rest.Handler(svc, &rest.SigV4Verifier{Creds: rest.Credentials{AccessKeyID: "bench", SecretAccessKey: "bench-secret"}, Region: "us-east-1"}))
	defer srv.Close()
	iotc, err := iotclient.NewIoT(ctx, iotclient.Config{Endpoint: srv.URL, Region: "us-east-1", AccessKeyID: "bench", SecretAccessKey: "bench-secret"})
	if err != nil {
		return nil, err
	}
	acts := &rolloutops.Ops{IoT: iotc}
	criteria := append(contract.DefaultHealthCriteria(),
		contract.HealthCriterion{Name: "restarts per device", Metric: "restarts", Statistic: "average", MaxRatio: 3, MinSample: 20})
	in := contract.EvaluateHealthInput{Criteria: criteria, Version: "2.0.0", Waves: "waves 1-2", UpdatedGroups: groups[:2], ControlGroups: groups[2:],
		StaleBefore: time.Now().Add(-time.Hour).Unix()}
	var times []float64
	for range 5 {
		t0 := time.Now()
		res, err := acts.EvaluateHealth(ctx, in)
		if err != nil {
			return nil, err
		}
		times = append(times, float64(time.Since(t0).Microseconds())/1000)
		if len(res.Values) != len(criteria) || res.Values[0].UpdatedN != n/4 {
			return nil, fmt.Errorf("gate evaluation saw %d updated devices, not %d: %+v", res.Values[0].UpdatedN, n/4, res.Values)
		}
	}
	g.EvaluateMs = median(times)
	o.say("gate: %d things on %s: one evaluation %.0f ms (index built in %.1f s)", n, g.Store, g.EvaluateMs, g.IndexBuildSeconds)
	return g, nil
}

// populate runs fn for 0..n-1 on 8 goroutines (registering a fleet: the store batches their
// writes) and returns the first error.
func populate(n int, fn func(i int) error) error {
	var eg errgroup.Group
	for w := range 8 {
		eg.Go(func() error {
			for i := w; i < n; i += 8 {
				if err := fn(i); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return eg.Wait()
}

// gateStores is the store a gate figure is measured on: the run's (PostgreSQL with --postgres).
func gateStores(o *Options) []bool { return []bool{o.PostgresURL != ""} }
