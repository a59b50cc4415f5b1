package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"
	"golang.org/x/sync/errgroup"

	"github.com/otaflow/otaflow/internal/iotjobs"
)

// The fleet at any size: what the console shows of the devices is read from the fleet index
// (AWS_Things), as counts and aggregations and one page of devices at a time, never by reading
// every device's shadow. Without the index (AWS IoT with indexing off) it falls back to reading
// the inventory shadows of at most MaxInventory things, and says so.

// softwares are the software names the console counts versions of.
var softwares = []string{"core", "ota_agent"}

func inventoryField(rest string) string {
	return "shadow.name." + iotjobs.InventoryShadow + ".reported." + rest
}

// fleetSummary is the fleet as the index counts it.
type fleetSummary struct {
	at        time.Time
	Devices   int                       `json:"devices"`
	Connected int                       `json:"connected"`
	Versions  map[string]map[string]int `json:"versions"`
	LastJobs  map[string]int            `json:"lastJobs"`
}

// summary reads the fleet's counts from the index, at most every 2 s however many tabs poll.
func (c *Console) summary(ctx context.Context) (*fleetSummary, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sum != nil && time.Since(c.sum.at) < 2*time.Second {
		return c.sum, nil
	}
	s := &fleetSummary{at: time.Now(), Versions: map[string]map[string]int{}, LastJobs: map[string]int{}}
	count := func(q string, into *int) func() error {
		return func() error {
			out, err := c.o.IoT.GetStatistics(ctx, &iot.GetStatisticsInput{QueryString: aws.String(q)})
			if err == nil && out.Statistics != nil {
				*into = int(out.Statistics.Count)
			}
			return err
		}
	}
	buckets := func(field string, into map[string]int) func() error {
		return func() error {
			out, err := c.o.IoT.GetBucketsAggregation(ctx, &iot.GetBucketsAggregationInput{QueryString: aws.String("thingName:*"), AggregationField: aws.String(field),
				BucketsAggregationType: &types.BucketsAggregationType{TermsAggregation: &types.TermsAggregation{MaxBuckets: aws.Int32(50)}}})
			if err == nil {
				for _, b := range out.Buckets {
					into[aws.ToString(b.KeyValue)] = int(b.Count)
				}
			}
			return err
		}
	}
	var g errgroup.Group
	g.Go(count("thingName:*", &s.Devices))
	// Connected as the broker saw it (its lifecycle events): a device that lost power cannot
	// say it left, so what its inventory says is no proof.
	g.Go(count("connectivity.connected:true", &s.Connected))
	for _, sw := range softwares {
		s.Versions[sw] = map[string]int{}
		g.Go(buckets(inventoryField("software."+sw), s.Versions[sw]))
	}
	g.Go(buckets(inventoryField("lastJob.status"), s.LastJobs))
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for sw, vs := range s.Versions {
		if len(vs) == 0 {
			delete(s.Versions, sw)
		}
	}
	c.sum = s
	return s, nil
}

// filterValue is what a filter may hold: no query syntax.
var filterValue = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// deviceQuery is the fleet index query of the device list's filters and search box.
func deviceQuery(r *http.Request) (string, error) {
	v := r.URL.Query()
	var parts []string
	if q := strings.TrimSpace(v.Get("q")); q != "" {
		switch {
		case strings.ContainsAny(q, ": ()*"):
			parts = append(parts, q)
		case namePrefixRE.MatchString(q):
			parts = append(parts, "thingName:"+q+"*")
		default:
			return "", errors.New("search for a thing name's beginning, or a fleet index query (field:value, AND, OR)")
		}
	}
	software := v.Get("software")
	if software == "" {
		software = "core"
	}
	if !slices.Contains(softwares, software) {
		return "", fmt.Errorf("software %q: use %s", software, strings.Join(softwares, " or "))
	}
	for _, f := range []struct{ param, field string }{
		{"version", inventoryField("software." + software)},
		{"status", inventoryField("lastJob.status")},
		{"group", "thingGroupNames"},
	} {
		if val := v.Get(f.param); val != "" {
			if !filterValue.MatchString(val) {
				return "", fmt.Errorf("%s %q: letters, digits and . _ : - only", f.param, val)
			}
			parts = append(parts, f.field+":"+val)
		}
	}
	switch v.Get("connected") {
	case "":
	case "yes":
		parts = append(parts, "connectivity.connected:true")
	case "no":
		parts = append(parts, "NOT connectivity.connected:true")
	default:
		return "", errors.New("connected: yes or no")
	}
	switch len(parts) {
	case 0:
		return "thingName:*", nil
	case 1:
		return parts[0], nil
	}
	for i, p := range parts {
		if strings.ContainsAny(p, " ()") {
			parts[i] = "(" + p + ")" // a query of its own, AND the filters
		}
	}
	return strings.Join(parts, " AND "), nil
}

// DevicePage is one device as its page shows it.
type DevicePage struct {
	Device     Device            `json:"device"`
	Type       string            `json:"thingType,omitempty"`
	Attributes map[string]string `json:"attributes,omitempty"`
	Groups     []string          `json:"groups"`
	Inventory  map[string]any    `json:"inventory,omitempty"`
	Health     map[string]any    `json:"health,omitempty"`
	Jobs       []DeviceJob       `json:"jobs"`
}

// DeviceJob is one job in a device's history, with the reason its agent gave.
type DeviceJob struct {
	JobID   string            `json:"jobId"`
	Status  string            `json:"status"`
	Updated time.Time         `json:"updated"`
	Details map[string]string `json:"details,omitempty"`
}

// deviceJobs bounds a device page's job history.
const deviceJobs = 25

func (c *Console) handleDevice(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
	defer cancel()
	thing := r.PathValue("thing")
	if !namePrefixRE.MatchString(thing) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "not a thing name"})
		return
	}
	th, err := c.o.IoT.DescribeThing(ctx, &iot.DescribeThingInput{ThingName: aws.String(thing)})
	var nf *types.ResourceNotFoundException
	if errors.As(err, &nf) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no thing " + thing})
		return
	}
	if err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": err.Error()})
		return
	}
	page := DevicePage{Device: Device{Thing: thing}, Type: aws.ToString(th.ThingTypeName), Attributes: th.Attributes, Groups: []string{}, Jobs: []DeviceJob{}}
	var g errgroup.Group
	g.Go(func() error {
		out, err := c.o.IoT.ListThingGroupsForThing(ctx, &iot.ListThingGroupsForThingInput{ThingName: aws.String(thing), MaxResults: aws.Int32(25)})
		if err == nil {
			for _, gr := range out.ThingGroups {
				page.Groups = append(page.Groups, aws.ToString(gr.GroupName))
			}
		}
		return err
	})
	if c.o.Shadows != nil {
		g.Go(func() error {
			sh, err := c.o.Shadows.Get(ctx, thing, iotjobs.InventoryShadow)
			if err == nil {
				page.Device, page.Inventory = deviceFrom(thing, sh, time.Now()), sh.State.Reported
			} else if !errors.Is(err, ErrNoShadow) {
				return err
			}
			return nil
		})
		g.Go(func() error {
			sh, err := c.o.Shadows.Get(ctx, thing, iotjobs.HealthShadow)
			if err == nil {
				page.Health = sh.State.Reported
			} else if !errors.Is(err, ErrNoShadow) {
				return err
			}
			return nil
		})
	}
	g.Go(func() error {
		out, err := c.o.IoT.ListJobExecutionsForThing(ctx, &iot.ListJobExecutionsForThingInput{ThingName: aws.String(thing), MaxResults: aws.Int32(deviceJobs)})
		if err != nil {
			return err
		}
		jobs := make([]DeviceJob, len(out.ExecutionSummaries))
		var dg errgroup.Group
		dg.SetLimit(8)
		for i, e := range out.ExecutionSummaries {
			jobs[i] = DeviceJob{JobID: aws.ToString(e.JobId)}
			if s := e.JobExecutionSummary; s != nil {
				jobs[i].Status, jobs[i].Updated = string(s.Status), aws.ToTime(s.LastUpdatedAt)
			}
			dg.Go(func() error {
				d, err := c.o.IoT.DescribeJobExecution(ctx, &iot.DescribeJobExecutionInput{JobId: e.JobId, ThingName: aws.String(thing)})
				if err == nil && d.Execution != nil && d.Execution.StatusDetails != nil {
					jobs[i].Details = d.Execution.StatusDetails.DetailsMap
				}
				return nil // a job deleted meanwhile keeps its row without details
			})
		}
		dg.Wait()
		slices.SortStableFunc(jobs, func(a, b DeviceJob) int { return b.Updated.Compare(a.Updated) })
		page.Jobs = jobs
		return nil
	})
	if err := g.Wait(); err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, page)
}
