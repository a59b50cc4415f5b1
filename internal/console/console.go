// Package console is otaflow's fleet console: a web page an operator works from. It shows the
// device inventory (installed version per software, last check-in, connected, last job result
// and reason) from the agents' inventory shadows, the version distribution, the rollouts with
// live per-wave counts read from the jobs service, each rollout's devices with their results
// and reasons, and buttons that steer a rollout through the same Temporal updates as the CLI.
// It works the same against AWS IoT (ListThings, the Device Shadow service, DescribeJob) as
// against the local jobs service.
package console

import (
	"context"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"
	"github.com/rs/zerolog"
	"go.temporal.io/sdk/client"

	"github.com/otaflow/otaflow/internal/iotjobs"
	"github.com/otaflow/otaflow/internal/localiot"
	"github.com/otaflow/otaflow/internal/rolloutclient"
	"github.com/otaflow/otaflow/workflows/contract"
)

//go:embed static
var static embed.FS

// Options configure the console.
type Options struct {
	Temporal  client.Client
	TaskQueue string
	IoT       *iot.Client
	Shadows   *ShadowReader
	// TemporalUI is the Temporal web UI's URL, for links to a rollout's history (empty: none).
	TemporalUI string
	Namespace  string
	// Password, when set, signs in the user "admin" (on the sign-in page, or by HTTP basic auth
	// for scripts). Outside a local development stack it must be set: the console steers
	// rollouts.
	Password string
	// ReleaseMetadataURL is where a bucket's release metadata (TUF) is served, and
	// ReleaseBuckets the buckets releases are published to: the releases view (nil: none).
	ReleaseMetadataURL func(bucket string) string
	ReleaseBuckets     []string
	// Users, when set, signs console users in (each with a role); the console password signs
	// in the user "admin". With neither, the console is open (a local development stack).
	Users Users
	// OIDC, when set, offers single sign-on through an OpenID Connect provider.
	OIDC *OIDC
	// RequireSignIn keeps the console closed without a password and users (a production
	// service's); otherwise such a console is open, as a local development stack's is.
	RequireSignIn bool
	// Audit records sign-ins and steering (nil: not recorded); AuditLog reads the log for the
	// console's audit page (nil: no page).
	Audit    func(localiot.AuditEntry)
	AuditLog func(localiot.AuditQuery) ([]localiot.AuditEntry, string, error)
	// MaxInventory bounds how many things the inventory reads (default 5000).
	MaxInventory int
	Logger       zerolog.Logger
}

// Console serves the fleet console under its prefix (Handler).
type Console struct {
	o  Options
	mu sync.Mutex
	// inv is the last inventory read, reused for at most a second.
	inv    *inventory
	invErr error
	// sum is the last fleet summary read from the index, reused for at most 2 s.
	sum *fleetSummary
	// movedOn caches rolloutclient.MovedOn per ended rollout for 10 s.
	movedOn  map[string]movedOn
	guard    *guard
	sessions sessions
	prefix   string
	oidc     *oidcClient
}

type principalKey struct{}

// New makes a console.
func New(o Options) *Console {
	if o.MaxInventory == 0 {
		o.MaxInventory = 5000
	}
	if o.TaskQueue == "" {
		o.TaskQueue = contract.TaskQueue
	}
	c := &Console{o: o, guard: newGuard()}
	if o.OIDC != nil {
		c.oidc = &oidcClient{o: *o.OIDC}
	}
	return c
}

// equalSecret compares in constant time (for equal lengths).
func equalSecret(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// Handler serves the console at prefix (e.g. "/console/").
func (c *Console) Handler(prefix string) http.Handler {
	c.prefix = prefix
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/sign-in", c.handleSignIn)
	mux.HandleFunc("POST /api/sign-out", c.handleSignOut)
	mux.HandleFunc("GET /api/session", c.handleSession)
	mux.HandleFunc("GET /api/oidc/login", c.handleOIDCLogin)
	mux.HandleFunc("GET /api/oidc/callback", c.handleOIDCCallback)
	sub, _ := fs.Sub(static, "static")
	mux.Handle("GET /", http.FileServerFS(sub))
	mux.HandleFunc("GET /api/overview", c.handleOverview)
	mux.HandleFunc("GET /api/rollouts/{id}", c.handleRollout)
	mux.HandleFunc("GET /api/devices", c.handleDevices)
	mux.HandleFunc("GET /api/devices/{thing}", c.handleDevice)
	mux.HandleFunc("GET /api/releases", c.handleReleases)
	mux.HandleFunc("GET /api/deployments", c.handleDeployments)
	mux.HandleFunc("POST /api/rollouts/{id}/{action}", c.handleAction)
	mux.HandleFunc("GET /api/audit", c.handleAudit)
	h := http.StripPrefix(strings.TrimSuffix(prefix, "/"), mux)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Cache-Control", "no-store")
		if r.Method == http.MethodPost {
			// A steering call must come from the console's own page: a custom header no
			// cross-site form can set, and an Origin (when sent) naming this host.
			if r.Header.Get("X-Otaflow-Console") != "1" {
				http.Error(w, "steering calls must come from the console page (X-Otaflow-Console header missing)", http.StatusForbidden)
				return
			}
			if o := r.Header.Get("Origin"); o != "" && o != "http://"+r.Host && o != "https://"+r.Host {
				http.Error(w, "cross-origin steering call refused", http.StatusForbidden)
				return
			}
		}
		// The page itself (HTML, script, style) holds no data: it is served to everyone, and
		// shows the sign-in form when the API asks for it. Every API call needs a principal.
		rest := strings.TrimPrefix(r.URL.Path, strings.TrimSuffix(prefix, "/"))
		if strings.HasPrefix(rest, "/api/") && !slices.Contains(signInPaths, rest) {
			p, ok := c.principal(w, r)
			if !ok {
				return
			}
			r = r.WithContext(context.WithValue(r.Context(), principalKey{}, p))
		}
		h.ServeHTTP(w, r)
	})
}

// signInPaths are the API paths that answer before a sign-in.
var signInPaths = []string{"/api/sign-in", "/api/sign-out", "/api/session", "/api/oidc/login", "/api/oidc/callback"}

// Device is one thing in the inventory.
type Device struct {
	Thing     string            `json:"thing"`
	Software  map[string]string `json:"software,omitempty"`
	LastSeen  time.Time         `json:"lastSeen,omitempty"`
	Connected bool              `json:"connected"`
	// Reported is false for a thing whose agent never wrote its inventory shadow.
	Reported bool           `json:"reported"`
	LastJob  map[string]any `json:"lastJob,omitempty"`
}

type inventory struct {
	at        time.Time
	devices   []Device
	versions  map[string]map[string]int
	truncated bool
}

// readInventory lists things and reads each one's inventory shadow (16 at a time), at most
// once a second however many pages poll.
func (c *Console) readInventory(ctx context.Context) (*inventory, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inv != nil && time.Since(c.inv.at) < time.Second {
		return c.inv, c.invErr
	}
	inv := &inventory{at: time.Now(), versions: map[string]map[string]int{}}
	var names []string
	p := iot.NewListThingsPaginator(c.o.IoT, &iot.ListThingsInput{MaxResults: aws.Int32(250)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			c.inv, c.invErr = inv, err
			return inv, err
		}
		for _, t := range page.Things {
			// The rollouts' own wave groups are not devices; things are.
			names = append(names, aws.ToString(t.ThingName))
		}
		if len(names) >= c.o.MaxInventory {
			names, inv.truncated = names[:c.o.MaxInventory], true
			break
		}
	}
	inv.devices = make([]Device, len(names))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	now := time.Now()
	for i, n := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			d := Device{Thing: n}
			if c.o.Shadows != nil {
				if sh, err := c.o.Shadows.Get(ctx, n, iotjobs.InventoryShadow); err == nil {
					d = deviceFrom(n, sh, now)
				} else if !errors.Is(err, ErrNoShadow) {
					c.o.Logger.Debug().Err(err).Str("thing", n).Msg("console: inventory shadow unreadable")
				}
			}
			inv.devices[i] = d
		}()
	}
	wg.Wait()
	for _, d := range inv.devices {
		for sw, v := range d.Software {
			if inv.versions[sw] == nil {
				inv.versions[sw] = map[string]int{}
			}
			inv.versions[sw][v]++
		}
	}
	c.inv, c.invErr = inv, nil
	return inv, nil
}

// fromReported is a device as its inventory shadow's reported state describes it: its
// software, last job and whether it says it is connected.
func fromReported(thing string, rep map[string]any) Device {
	d := Device{Thing: thing, Reported: true, Software: map[string]string{}}
	if sw, ok := rep["software"].(map[string]any); ok {
		for k, v := range sw {
			if s, ok := v.(string); ok {
				d.Software[k] = s
			}
		}
	}
	if lj, ok := rep["lastJob"].(map[string]any); ok {
		d.LastJob = lj
	}
	d.Connected, _ = rep["connected"].(bool)
	return d
}

// deviceFrom reads an inventory shadow. A device counts as connected when it said so and its
// last check-in is within twice the interval it promised plus a minute: an agent that lost
// power cannot say goodbye, so silence past its check-in interval means gone.
func deviceFrom(thing string, sh *Shadow, now time.Time) Device {
	rep := sh.State.Reported
	d := fromReported(thing, rep)
	d.LastSeen = time.Unix(sh.Timestamp, 0).UTC()
	connected := d.Connected
	every, _ := rep["checkInSeconds"].(float64)
	if every <= 0 {
		every = 720
	}
	d.Connected = connected && now.Sub(d.LastSeen) <= 2*time.Duration(every)*time.Second+time.Minute
	return d
}

type rolloutRow struct {
	rolloutclient.Row
	Live    *contract.RolloutResult `json:"live,omitempty"`
	History string                  `json:"history,omitempty"`
}

func (c *Console) history(workflowID string) string {
	if c.o.TemporalUI == "" {
		return ""
	}
	ns := c.o.Namespace
	if ns == "" {
		ns = "default"
	}
	return strings.TrimSuffix(c.o.TemporalUI, "/") + "/namespaces/" + ns + "/workflows/" + workflowID
}

func (c *Console) handleOverview(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
	defer cancel()
	out := map[string]any{"at": time.Now().UTC(), "temporalUI": c.o.TemporalUI}
	var problems []string
	if sum, err := c.summary(ctx); err == nil {
		// The fleet index counts the fleet at any size; the device list pages through it.
		out["fleet"], out["versions"], out["indexed"] = sum, sum.Versions, true
	} else {
		// No index (AWS IoT without fleet indexing): read the inventory shadows of a bounded
		// number of things, and say that it is not the whole fleet's figure.
		c.o.Logger.Debug().Err(err).Msg("console: no fleet index; reading inventory shadows")
		inv, err := c.readInventory(ctx)
		if err != nil {
			problems = append(problems, "inventory: "+err.Error())
		}
		if inv != nil {
			out["devices"], out["versions"], out["truncated"] = inv.devices, inv.versions, inv.truncated
		}
	}
	rows, err := rolloutclient.List(ctx, c.o.Temporal, 50)
	if err != nil {
		problems = append(problems, "rollouts: "+err.Error())
	}
	list := make([]rolloutRow, 0, len(rows))
	for _, row := range rows {
		rr := rolloutRow{Row: row, History: c.history(row.WorkflowID)}
		if row.Status == "RUNNING" || len(list) < 10 {
			if res, _, err := rolloutclient.LiveStatus(ctx, c.o.Temporal, c.o.IoT, row.RolloutID); err == nil {
				rr.Live = &res
				rr.State = res.State
				if res.Paused && res.State == contract.StateRunning {
					rr.State = contract.StatePaused
				}
			}
		}
		list = append(list, rr)
	}
	out["rollouts"] = list
	out["problems"] = problems
	writeJSON(w, http.StatusOK, out)
}

func (c *Console) handleRollout(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
	defer cancel()
	id := r.PathValue("id")
	res, stale, err := rolloutclient.LiveStatus(ctx, c.o.Temporal, c.o.IoT, id)
	if err != nil {
		status := http.StatusBadGateway
		if errors.Is(err, rolloutclient.ErrNoRollout) {
			status = http.StatusNotFound
		}
		writeJSON(w, status, map[string]string{"error": err.Error()})
		return
	}
	devices, derr := rolloutclient.DeviceResults(ctx, c.o.IoT, res, false, 1000)
	slices.SortStableFunc(devices, func(a, b rolloutclient.DeviceResult) int { return rank(a.Status) - rank(b.Status) })
	out := map[string]any{"status": res, "devices": devices, "staleJobs": stale, "downloads": rolloutclient.Downloads(devices)}
	if wid, err := rolloutclient.WorkflowID(ctx, c.o.Temporal, id); err == nil {
		out["history"] = c.history(wid)
	}
	if !slices.Contains([]string{"RUNNING", "PAUSED", "AWAITING_APPROVAL", "WAITING_FOR_WINDOW", "OBSERVING_HEALTH", "ROLLING_BACK", "CANCELING", "VALIDATING"}, res.State) {
		// Rolling back a rollout whose devices a later one moved on would be refused by them.
		out["movedOnBy"] = c.movedOnBy(ctx, id)
	}
	if derr != nil {
		out["problem"] = derr.Error()
	}
	writeJSON(w, http.StatusOK, out)
}

type movedOn struct {
	at  time.Time
	ids []string
}

// movedOnBy are the later rollouts that moved an ended rollout's devices on (cached 10 s: the
// page asks every second, and the answer changes only when a rollout starts).
func (c *Console) movedOnBy(ctx context.Context, id string) []string {
	c.mu.Lock()
	m, ok := c.movedOn[id]
	c.mu.Unlock()
	if ok && time.Since(m.at) < 10*time.Second {
		return m.ids
	}
	ids := rolloutclient.MovedOn(ctx, c.o.Temporal, id)
	c.mu.Lock()
	if c.movedOn == nil || len(c.movedOn) > 1000 {
		c.movedOn = map[string]movedOn{}
	}
	c.movedOn[id] = movedOn{at: time.Now(), ids: ids}
	c.mu.Unlock()
	return ids
}

// rank puts the devices an operator must look at first: failures, then running, then done.
func rank(status string) int {
	switch status {
	case "FAILED", "TIMED_OUT", "REJECTED":
		return 0
	case "IN_PROGRESS":
		return 1
	case "QUEUED":
		return 2
	}
	return 3
}

func (c *Console) handleAction(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Minute)
	defer cancel()
	id, action := r.PathValue("id"), r.PathValue("action")
	var body struct {
		Reason string `json:"reason"`
	}
	json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&body)
	p, _ := r.Context().Value(principalKey{}).(localiot.Principal)
	entry := localiot.AuditEntry{Who: p.Name, Role: p.Role, Via: "console", From: clientOf(r), Action: "rollout." + action, Resource: "/rollouts/" + id + "/" + action, Reason: body.Reason}
	if !p.Role.Allows(localiot.PermOperate) {
		msg := fmt.Sprintf("%s (role %s) may not %s a rollout: it needs the %s role", p.Name, p.Role, action, localiot.PermOperate.Needs())
		entry.Outcome, entry.Detail = localiot.OutcomeDenied, msg
		c.audit(entry)
		writeJSON(w, http.StatusForbidden, map[string]string{"error": msg})
		return
	}
	if len(p.ThingGroups) > 0 && c.o.Users != nil {
		// A user limited to thing groups steers only rollouts of its groups' devices.
		targets, err := rolloutclient.Targets(ctx, c.o.Temporal, id)
		if err == nil {
			err = c.o.Users.TargetsInScope(p, targets)
		}
		if err != nil {
			var e *localiot.Error
			msg := err.Error()
			if errors.As(err, &e) {
				msg = e.Message
			}
			entry.Outcome, entry.Detail = localiot.OutcomeDenied, msg
			c.audit(entry)
			writeJSON(w, http.StatusForbidden, map[string]string{"error": msg})
			return
		}
	}
	aw := &auditWriter{ResponseWriter: w, status: http.StatusOK}
	w = aw
	defer func() {
		entry.Outcome = localiot.OutcomeOK
		if aw.status >= 400 {
			entry.Outcome, entry.Detail = http.StatusText(aw.status), aw.detail
		}
		c.audit(entry)
	}()
	out, err := rolloutclient.Steer(ctx, c.o.Temporal, c.o.TaskQueue, id, action, p.Name, body.Reason)
	if err != nil {
		status := http.StatusConflict
		switch {
		case errors.Is(err, rolloutclient.ErrNoRollout), errors.Is(err, rolloutclient.ErrUnknownAction):
			status = http.StatusNotFound
		case errors.Is(err, rolloutclient.ErrNeedsReason):
			status = http.StatusBadRequest
		}
		writeJSON(w, status, map[string]string{"error": err.Error()})
		return
	}
	if note := out.LaterNote(id); note != "" {
		out.Message += "; " + note
	}
	c.o.Logger.Info().Str("rollout", id).Str("action", action).Str("user", p.Name).Str("result", out.Message).Msg("console: rollout steered")
	writeJSON(w, http.StatusOK, out)
}

// handleAudit answers the newest 100 audit entries that match the page's filters.
func (c *Console) handleAudit(w http.ResponseWriter, r *http.Request) {
	if c.o.AuditLog == nil {
		writeJSON(w, http.StatusOK, map[string]any{"entries": []any{}, "note": "this console has no audit log to show"})
		return
	}
	q := r.URL.Query()
	entries, _, err := c.o.AuditLog(localiot.AuditQuery{Who: q.Get("who"), Action: q.Get("action"), Resource: q.Get("resource"), Outcome: q.Get("outcome"), Limit: 100})
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "audit log: " + err.Error()})
		return
	}
	if entries == nil {
		entries = []localiot.AuditEntry{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": entries})
}

// auditWriter notes a steering answer's status and error for the audit log.
type auditWriter struct {
	http.ResponseWriter
	status int
	detail string
}

func (a *auditWriter) WriteHeader(code int) { a.status = code; a.ResponseWriter.WriteHeader(code) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	if a, ok := w.(*auditWriter); ok {
		if m, ok := v.(map[string]string); ok {
			a.detail = m["error"]
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// searchPage is how many devices one search answers; more come page by page.
const searchPage = 50

var namePrefixRE = regexp.MustCompile(`^[a-zA-Z0-9:_-]{1,128}$`)

// handleDevices answers one page of devices from the fleet index (AWS_Things): filtered by
// version, last job status, group and connected, and a name prefix or any fleet index query
// (e.g. shadow.name.otaflow.reported.software.core:1.11.6), 50 at a time with a token for the
// next page. It reads what the index holds, never every
// thing's shadow, so it costs the same at 100 devices as at 100,000.
func (c *Console) handleDevices(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
	defer cancel()
	query, err := deviceQuery(r)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	in := &iot.SearchIndexInput{QueryString: aws.String(query), MaxResults: aws.Int32(searchPage)}
	if n := r.URL.Query().Get("next"); n != "" {
		in.NextToken = aws.String(n)
	}
	out, err := c.o.IoT.SearchIndex(ctx, in)
	var notReady *types.IndexNotReadyException
	var notFound *types.ResourceNotFoundException
	var invalid *types.InvalidQueryException
	switch {
	case errors.As(err, &invalid):
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "the fleet index refused the query: " + aws.ToString(invalid.Message)})
		return
	case errors.As(err, &notReady), errors.As(err, &notFound):
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "searching needs fleet indexing (thing indexing with the " + iotjobs.InventoryShadow + " named shadow); the device list above still works"})
		return
	case err != nil:
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": err.Error()})
		return
	}
	devices := make([]Device, 0, len(out.Things))
	for _, th := range out.Things {
		devices = append(devices, deviceFromIndex(th))
	}
	writeJSON(w, http.StatusOK, map[string]any{"query": query, "devices": devices, "next": aws.ToString(out.NextToken)})
}

// deviceFromIndex reads a device from its fleet index document: the inventory shadow's
// reported state, and the broker's connectivity when the index has it.
func deviceFromIndex(th types.ThingDocument) Device {
	d := Device{Thing: aws.ToString(th.ThingName)}
	var sh struct {
		Name map[string]struct {
			Reported map[string]any `json:"reported"`
		} `json:"name"`
	}
	if json.Unmarshal([]byte(aws.ToString(th.Shadow)), &sh) == nil {
		if inv, ok := sh.Name[iotjobs.InventoryShadow]; ok && inv.Reported != nil {
			d = fromReported(d.Thing, inv.Reported)
		}
	}
	if cn := th.Connectivity; cn != nil {
		d.Connected = aws.ToBool(cn.Connected)
		if cn.Timestamp != nil {
			d.LastSeen = time.UnixMilli(*cn.Timestamp).UTC()
		}
	}
	return d
}
