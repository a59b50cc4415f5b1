package localiot_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/localiot/rest"
)

// The AWS IoT service model that Debian's awscli installs (`make deps`): the contract every
// response of the jobs service is checked against.
const iotModelPath = "/usr/lib/python3/dist-packages/awscli/botocore/data/iot/2015-05-28/service-2.json"

type serviceModel struct {
	Operations map[string]struct {
		HTTP struct {
			Method     string `json:"method"`
			RequestURI string `json:"requestUri"`
		} `json:"http"`
		Output *struct {
			Shape string `json:"shape"`
		} `json:"output"`
	} `json:"operations"`
	Shapes map[string]modelShape `json:"shapes"`
}

type modelShape struct {
	Type    string                 `json:"type"`
	Members map[string]modelMember `json:"members"`
	Member  *modelRef              `json:"member"`
	Value   *modelRef              `json:"value"`
	Payload string                 `json:"payload"`
}

type modelMember struct {
	Shape        string `json:"shape"`
	Location     string `json:"location"`
	LocationName string `json:"locationName"`
}

type modelRef struct {
	Shape string `json:"shape"`
}

func loadIoTModel(t *testing.T) *serviceModel {
	t.Helper()
	raw, err := os.ReadFile(iotModelPath)
	require.NoError(t, err, "the AWS IoT service model comes with Debian's awscli: run `make deps`")
	var m serviceModel
	require.NoError(t, json.Unmarshal(raw, &m))
	m.addNewerMembers()
	return &m
}

// addNewerMembers adds what AWS's current IoT model has and Debian's older awscli model lacks:
// maintenance windows (types.SchedulingConfig.MaintenanceWindows and Job.ScheduledJobRollouts
// in aws-sdk-go-v2's iot v1.75). Only these; every other member must be in the file.
func (m *serviceModel) addNewerMembers() {
	member := func(shape, name, of string) {
		s := m.Shapes[shape]
		if _, ok := s.Members[name]; ok {
			return
		}
		s.Members[name] = modelMember{Shape: of}
		m.Shapes[shape] = s
	}
	shape := func(name string, s modelShape) {
		if _, ok := m.Shapes[name]; !ok {
			m.Shapes[name] = s
		}
	}
	shape("otaflowString", modelShape{Type: "string"})
	shape("otaflowInteger", modelShape{Type: "integer"})
	shape("MaintenanceWindow", modelShape{Type: "structure", Members: map[string]modelMember{"startTime": {Shape: "otaflowString"}, "durationInMinutes": {Shape: "otaflowInteger"}}})
	shape("MaintenanceWindows", modelShape{Type: "list", Member: &modelRef{Shape: "MaintenanceWindow"}})
	shape("ScheduledJobRollout", modelShape{Type: "structure", Members: map[string]modelMember{"startTime": {Shape: "otaflowString"}}})
	shape("ScheduledJobRolloutList", modelShape{Type: "list", Member: &modelRef{Shape: "ScheduledJobRollout"}})
	member("SchedulingConfig", "maintenanceWindows", "MaintenanceWindows")
	member("Job", "scheduledJobRollouts", "ScheduledJobRolloutList")
}

// operation finds the model operation a request was for: the one whose method matches and
// whose URI template matches the path, preferring literal segments over {labels}.
func (m *serviceModel) operation(method, path string) (string, bool) {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	best, bestScore := "", -1
	for name, op := range m.Operations {
		if op.HTTP.Method != method {
			continue
		}
		uri, _, _ := strings.Cut(op.HTTP.RequestURI, "?")
		tsegs := strings.Split(strings.Trim(uri, "/"), "/")
		greedy := len(tsegs) > 0 && strings.HasSuffix(tsegs[len(tsegs)-1], "+}")
		if len(tsegs) != len(segs) && !(greedy && len(segs) >= len(tsegs)) {
			continue
		}
		score, ok := 0, true
		for i, ts := range tsegs {
			switch {
			case strings.HasPrefix(ts, "{"):
			case ts == segs[i]:
				score++
			default:
				ok = false
			}
		}
		if ok && score > bestScore {
			best, bestScore = name, score
		}
	}
	return best, best != ""
}

// check reports every member of v that the shape does not define, or defines with another type.
func (m *serviceModel) check(shape string, v any, at string, problems *[]string) {
	s, ok := m.Shapes[shape]
	if !ok {
		*problems = append(*problems, fmt.Sprintf("%s: shape %s is not in the model", at, shape))
		return
	}
	bad := func(want string) {
		*problems = append(*problems, fmt.Sprintf("%s: %s expected (shape %s), got %T", at, want, shape, v))
	}
	switch s.Type {
	case "structure":
		obj, ok := v.(map[string]any)
		if !ok {
			bad("object")
			return
		}
		byJSON := map[string]string{}
		for name, mem := range s.Members {
			if mem.Location != "" { // headers, query, URI: not in the body
				continue
			}
			key := name
			if mem.LocationName != "" {
				key = mem.LocationName
			}
			byJSON[key] = mem.Shape
		}
		for k, val := range obj {
			ms, ok := byJSON[k]
			if !ok {
				*problems = append(*problems, fmt.Sprintf("%s.%s: AWS's %s has no member %q", at, k, shape, k))
				continue
			}
			if val != nil {
				m.check(ms, val, at+"."+k, problems)
			}
		}
	case "list":
		arr, ok := v.([]any)
		if !ok {
			bad("array")
			return
		}
		for i, e := range arr {
			m.check(s.Member.Shape, e, fmt.Sprintf("%s[%d]", at, i), problems)
		}
	case "map":
		obj, ok := v.(map[string]any)
		if !ok {
			bad("object")
			return
		}
		for k, e := range obj {
			m.check(s.Value.Shape, e, at+"."+k, problems)
		}
	case "string":
		if _, ok := v.(string); !ok {
			bad("string")
		}
	case "integer", "long", "double", "float":
		if _, ok := v.(float64); !ok {
			bad("number")
		}
	case "timestamp": // rest-json: epoch seconds
		if _, ok := v.(float64); !ok {
			bad("epoch-seconds number")
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			bad("boolean")
		}
	}
}

// modelRecorder keeps every successful REST answer the service gave, for checkAgainstModel.
type modelRecorder struct {
	mu   sync.Mutex
	seen []recorded
}

type recorded struct {
	method, path string
	body         []byte
}

func (rec *modelRecorder) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cw := &captureWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(cw, r)
		if cw.status < 300 && !strings.HasPrefix(r.URL.Path, "/artifacts/") && !strings.HasPrefix(r.URL.Path, "/greengrass/") &&
			!strings.HasPrefix(r.URL.Path, "/tuf/") && !strings.Contains(r.URL.Path, "/shadow") && r.URL.Path != "/healthz" {
			rec.mu.Lock()
			rec.seen = append(rec.seen, recorded{r.Method, r.URL.Path, cw.body.Bytes()})
			rec.mu.Unlock()
		}
	})
}

type captureWriter struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (c *captureWriter) WriteHeader(s int) { c.status = s; c.ResponseWriter.WriteHeader(s) }
func (c *captureWriter) Write(b []byte) (int, error) {
	c.body.Write(b)
	return c.ResponseWriter.Write(b)
}

// checkAgainstModel fails for every recorded answer that is not an AWS operation, or has a
// member AWS does not define, and returns the operations seen.
func (rec *modelRecorder) checkAgainstModel(t *testing.T, m *serviceModel) []string {
	t.Helper()
	var problems []string
	ops := map[string]bool{}
	for _, r := range rec.seen {
		name, ok := m.operation(r.method, r.path)
		if !ok {
			problems = append(problems, fmt.Sprintf("%s %s answered 2xx but is no AWS IoT operation", r.method, r.path))
			continue
		}
		ops[name] = true
		op := m.Operations[name]
		body := bytes.TrimSpace(r.body)
		if op.Output == nil || len(body) == 0 {
			continue
		}
		var v any
		if err := json.Unmarshal(body, &v); err != nil {
			problems = append(problems, fmt.Sprintf("%s: not JSON: %v", name, err))
			continue
		}
		m.check(op.Output.Shape, v, name, &problems)
	}
	require.Empty(t, problems, "responses that differ from the AWS IoT service model")
	out := make([]string, 0, len(ops))
	for o := range ops {
		out = append(out, o)
	}
	sort.Strings(out)
	return out
}

// serveRecorded serves svc like serve does and records its answers.
func serveRecorded(t *testing.T, svc *localiot.Service) (string, *modelRecorder) {
	t.Helper()
	rec := &modelRecorder{}
	srv := httptest.NewServer(rec.wrap(rest.Handler(svc, &rest.SigV4Verifier{Creds: testCreds, Region: "us-east-1"})))
	t.Cleanup(srv.Close)
	return srv.URL, rec
}

// The checker itself: a member AWS does not define, or one of the wrong type, is reported.
func TestModelCheckerCatchesStrangers(t *testing.T) {
	m := loadIoTModel(t)
	op, ok := m.operation("GET", "/jobs/job-1")
	require.True(t, ok)
	require.Equal(t, "DescribeJob", op)
	op, ok = m.operation("PUT", "/thing-groups/addThingToThingGroup")
	require.True(t, ok)
	require.Equal(t, "AddThingToThingGroup", op, "a literal segment wins over a label")
	var problems []string
	var v any
	require.NoError(t, json.Unmarshal([]byte(`{"job":{"jobId":"j","status":"IN_PROGRESS","createdAt":"2026-01-01","bogus":1}}`), &v))
	m.check("DescribeJobResponse", v, "DescribeJob", &problems)
	require.Len(t, problems, 2, "%v", problems)
	require.Contains(t, strings.Join(problems, "\n"), `no member "bogus"`)
	require.Contains(t, strings.Join(problems, "\n"), "createdAt: epoch-seconds number expected")
}
