package localiot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/otaflow/otaflow/internal/fleetindex"
	"github.com/otaflow/otaflow/internal/iotjobs"
	"github.com/otaflow/otaflow/internal/localiot/store"
)

// Fleet indexing, as AWS IoT serves it: UpdateIndexingConfiguration and
// GetIndexingConfiguration, DescribeIndex and ListIndices, SearchIndex, and the aggregations
// GetStatistics, GetPercentiles, GetCardinality and GetBucketsAggregation, with AWS's query
// syntax (package fleetindex). The index is kept in memory, built from the store when indexing
// is turned on (or the service starts with it on) and updated after every transaction that
// touches a thing, its groups or its shadows. Only the AWS_Things index is served.

// ThingsIndex is the name of the thing index.
const ThingsIndex = "AWS_Things"

// IndexingConfiguration is the thing index's configuration, as AWS's
// ThingIndexingConfiguration (the members otaflow honours).
type IndexingConfiguration struct {
	ThingIndexingMode             string       `json:"thingIndexingMode"`
	ThingConnectivityIndexingMode string       `json:"thingConnectivityIndexingMode,omitempty"`
	NamedShadowIndexingMode       string       `json:"namedShadowIndexingMode,omitempty"`
	DeviceDefenderIndexingMode    string       `json:"deviceDefenderIndexingMode,omitempty"`
	ManagedFields                 []IndexField `json:"managedFields,omitempty"`
	CustomFields                  []IndexField `json:"customFields,omitempty"`
	Filter                        *IndexFilter `json:"filter,omitempty"`
}

// IndexField is a field and its type (Number, String, Boolean).
type IndexField struct {
	Name string `json:"name"`
	Type string `json:"type,omitempty"`
}

// IndexFilter names the named shadows to index.
type IndexFilter struct {
	NamedShadowNames []string `json:"namedShadowNames,omitempty"`
}

// AWS's quota: at most 10 named shadows in the index's filter.
const maxIndexedShadows = 10

const indexConfigKind, indexConfigName = "indexing-config", "things"

// managedFields are the fields AWS always indexes, with their types.
var managedFields = []IndexField{
	{"thingName", "String"}, {"thingId", "String"}, {"thingTypeName", "String"}, {"thingGroupNames", "String"},
	{"registry.version", "Number"}, {"connectivity.connected", "Boolean"}, {"connectivity.timestamp", "Number"},
}

// fleetIndex is the service's index and its configuration.
type fleetIndex struct {
	mu  sync.RWMutex
	cfg IndexingConfiguration
	ix  *fleetindex.Index // nil while thing indexing is OFF
	// replica names this process in change notices; stop ends the listener (PostgreSQL).
	replica string
	stop    context.CancelFunc
	done    chan struct{}
}

// configChanged is the change notice of the indexing configuration.
const configChanged = "!config"

// listenForChanges keeps the index current with what other replicas change: on PostgreSQL,
// each replica tells the others which things a committed transaction touched (NOTIFY), and
// each rereads them; after a lost connection, the index is rebuilt. It returns once it
// listens, so the index the service loads next misses no change made after it.
func (s *Service) listenForChanges() {
	pg, ok := s.Shared()
	if !ok {
		return
	}
	b := make([]byte, 6)
	rand.Read(b)
	s.index.replica = hex.EncodeToString(b)
	ctx, stop := context.WithCancel(context.Background())
	s.index.stop, s.index.done = stop, make(chan struct{})
	listening := make(chan struct{})
	go func() {
		defer close(s.index.done)
		pg.ListenThings(ctx, s.index.replica, func() { close(listening) }, func(names []string) {
			if names == nil || slices.Contains(names, configChanged) {
				if err := s.loadIndex(false); err != nil {
					s.log.Warn().Err(err).Msg("fleet index: could not reload after another replica's change")
				}
				return
			}
			s.reindex(names)
		})
	}()
	select { // changes from here on reach the index
	case <-listening:
	case <-time.After(5 * time.Second):
		s.log.Warn().Msg("fleet index: not yet listening for other replicas' changes; it will catch up when it does")
	}
}

// stopListening ends the change listener.
func (s *Service) stopListening() {
	if s.index.stop != nil {
		s.index.stop()
		<-s.index.done
	}
}

// announce tells the other replicas which things this one changed.
func (s *Service) announce(names []string) {
	pg, ok := s.Shared()
	if !ok || len(names) == 0 {
		return
	}
	if err := pg.NotifyThings(s.index.replica, names); err != nil {
		s.log.Warn().Err(err).Msg("fleet index: could not tell the other replicas what changed")
	}
}

func (f *fleetIndex) current() (IndexingConfiguration, *fleetindex.Index) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.cfg, f.ix
}

// loadIndex reads the configuration and builds the index when it is on; on, the first time,
// when on is set (Options.FleetIndexing).
func (s *Service) loadIndex(on bool) error {
	var cfg IndexingConfiguration
	err := s.st.View(func(t store.Tx) error {
		raw, err := t.Record(indexConfigKind, indexConfigName)
		if err != nil || raw == nil {
			return err
		}
		return json.Unmarshal(raw, &cfg)
	})
	if err != nil {
		return err
	}
	if cfg.ThingIndexingMode == "" {
		cfg.ThingIndexingMode = "OFF"
		if on {
			cfg = HealthIndexing()
		}
	}
	return s.applyIndexing(cfg)
}

// applyIndexing switches to cfg, building a new index from the store when it is on.
func (s *Service) applyIndexing(cfg IndexingConfiguration) error {
	var ix *fleetindex.Index
	if cfg.ThingIndexingMode != "OFF" {
		ix = fleetindex.New()
		err := s.st.View(func(t store.Tx) error {
			return t.ForEachThing(func(th *store.Thing) error {
				d, err := indexDoc(t, th, cfg)
				if err == nil {
					ix.Put(d)
				}
				return err
			})
		})
		if err != nil {
			return fmt.Errorf("build the fleet index: %w", err)
		}
	}
	s.index.mu.Lock()
	s.index.cfg, s.index.ix = cfg, ix
	s.index.mu.Unlock()
	return nil
}

// InventoryFields are the agents' inventory fields the console aggregates (String fields).
var InventoryFields = []string{
	"shadow.name." + iotjobs.InventoryShadow + ".reported.software.core",
	"shadow.name." + iotjobs.InventoryShadow + ".reported.software.ota_agent",
	"shadow.name." + iotjobs.InventoryShadow + ".reported.lastJob.status",
}

// HealthIndexing is the configuration the health gates and the console need: registry and the
// agents' inventory and health shadows, with the health record's numbers as Number fields and
// the inventory's versions and last job status as String fields.
func HealthIndexing() IndexingConfiguration {
	cfg := IndexingConfiguration{ThingIndexingMode: "REGISTRY_AND_SHADOW", NamedShadowIndexingMode: "ON", ThingConnectivityIndexingMode: "STATUS",
		Filter: &IndexFilter{NamedShadowNames: []string{iotjobs.InventoryShadow, iotjobs.HealthShadow}}}
	for _, f := range []string{"reportedAt", "updatedAt", "bootsSinceUpdate", "restarts", "healthChecks", "healthCheckFailures", "reconnects", "freeBytes"} {
		cfg.CustomFields = append(cfg.CustomFields, IndexField{Name: "shadow.name.health.reported." + f, Type: "Number"})
	}
	// What the fleet console counts devices by: the versions and the last job the agents report.
	for _, f := range InventoryFields {
		cfg.CustomFields = append(cfg.CustomFields, IndexField{Name: f, Type: "String"})
	}
	return cfg
}

// Connectivity comes from the broker's lifecycle events, as on AWS IoT Core.
const (
	PresencePrefix = "$aws/events/presence/"
	PresenceFilter = PresencePrefix + "+/+"
	presenceKind   = "presence"
)

type presenceEvent struct {
	ClientID         string `json:"clientId"`
	Timestamp        int64  `json:"timestamp"`
	EventType        string `json:"eventType"`
	DisconnectReason string `json:"disconnectReason,omitempty"`
}

// Presence records a device's connection or disconnection, when the index keeps
// connectivity (thingConnectivityIndexingMode STATUS); otherwise it costs nothing. The
// record is written in the background: the MQTT router must not wait for the store.
func (s *Service) Presence(payload []byte) {
	if cfg, ix := s.index.current(); ix == nil || cfg.ThingConnectivityIndexingMode != "STATUS" {
		return
	}
	var ev presenceEvent
	if json.Unmarshal(payload, &ev) != nil || ev.ClientID == "" || (ev.EventType != "connected" && ev.EventType != "disconnected") {
		return
	}
	go func() {
		err := s.st.Batch(func(t store.Tx) error {
			th, err := t.Thing(ev.ClientID)
			if err != nil || th == nil {
				return err // a client that is no thing has no connectivity to index
			}
			if raw, _ := t.Record(presenceKind, ev.ClientID); raw != nil {
				var last presenceEvent
				if json.Unmarshal(raw, &last) == nil && last.Timestamp > ev.Timestamp {
					return nil // events may arrive out of order
				}
			}
			return t.PutRecord(presenceKind, ev.ClientID, payload)
		})
		if err != nil {
			s.log.Warn().Err(err).Str("thing", ev.ClientID).Msg("fleet index: could not record connectivity")
		}
	}()
}

// indexDoc is a thing as the index sees it under cfg.
func indexDoc(t store.Tx, th *store.Thing, cfg IndexingConfiguration) (fleetindex.Doc, error) {
	d := fleetindex.Doc{ThingName: th.Name, ThingID: th.ID, ThingTypeName: th.TypeName, Attributes: th.Attributes}
	groups, err := t.ThingGroups(th.Name)
	if err != nil {
		return d, err
	}
	d.Groups = groups
	if cfg.ThingConnectivityIndexingMode == "STATUS" {
		raw, err := t.Record(presenceKind, th.Name)
		if err != nil {
			return d, err
		}
		var ev presenceEvent
		if raw != nil && json.Unmarshal(raw, &ev) == nil {
			connected := ev.EventType == "connected"
			d.Connected, d.ConnectedAt = &connected, ev.Timestamp
		}
	}
	if cfg.ThingIndexingMode == "REGISTRY_AND_SHADOW" && cfg.NamedShadowIndexingMode == "ON" && cfg.Filter != nil {
		for _, name := range cfg.Filter.NamedShadowNames {
			sh, err := shadowOf(t, th, name)
			if err != nil {
				return d, err
			}
			if sh == nil {
				continue
			}
			if d.Shadows == nil {
				d.Shadows = map[string]fleetindex.Shadow{}
			}
			d.Shadows[name] = fleetindex.Shadow{Reported: sh.Reported, Desired: sh.Desired, Version: sh.Version}
		}
	}
	return d, nil
}

// reindex brings the index up to date for things a committed transaction touched.
func (s *Service) reindex(things []string) {
	cfg, ix := s.index.current()
	if ix == nil || len(things) == 0 {
		return
	}
	slices.Sort(things)
	things = slices.Compact(things)
	err := s.st.View(func(t store.Tx) error {
		for _, name := range things {
			th, err := t.Thing(name)
			if err != nil {
				return err
			}
			if th == nil {
				ix.Delete(name)
				continue
			}
			d, err := indexDoc(t, th, cfg)
			if err != nil {
				return err
			}
			ix.Put(d)
		}
		return nil
	})
	if err != nil {
		s.log.Warn().Err(err).Msg("fleet index: could not read changed things; they are indexed at the next change")
	}
	s.dynamicChanged(things)
}

// indexingStore records which things each transaction touches, and reindexes them once it
// has committed.
type indexingStore struct {
	store.Store
	s *Service
}

type touchingTx struct {
	store.Tx
	touched *[]string
}

func (t touchingTx) PutThing(th *store.Thing) error {
	*t.touched = append(*t.touched, th.Name)
	return t.Tx.PutThing(th)
}
func (t touchingTx) DeleteThing(name string) error {
	*t.touched = append(*t.touched, name)
	return t.Tx.DeleteThing(name)
}
func (t touchingTx) SetMember(group, thing string, member bool) error {
	*t.touched = append(*t.touched, thing)
	return t.Tx.SetMember(group, thing, member)
}
func (t touchingTx) DeleteGroup(name string) error {
	members, err := t.Tx.GroupThings(name)
	if err != nil {
		return err
	}
	*t.touched = append(*t.touched, members...)
	return t.Tx.DeleteGroup(name)
}
func (t touchingTx) PutRecord(kind, name string, body []byte) error {
	t.touchRecord(kind, name)
	return t.Tx.PutRecord(kind, name, body)
}
func (t touchingTx) DeleteRecord(kind, name string) error {
	t.touchRecord(kind, name)
	return t.Tx.DeleteRecord(kind, name)
}

// touchRecord notes the thing a record belongs to: its shadows and its presence.
func (t touchingTx) touchRecord(kind, name string) {
	if thing, ok := strings.CutPrefix(kind, "shadow/"); ok {
		*t.touched = append(*t.touched, thing)
	} else if kind == presenceKind {
		*t.touched = append(*t.touched, name)
	}
}

func (st indexingStore) run(kind string, do func(func(store.Tx) error) error, fn func(store.Tx) error) error {
	defer observeStore(kind, time.Now())
	var touched []string
	err := do(func(t store.Tx) error {
		touched = touched[:0]
		return fn(touchingTx{Tx: t, touched: &touched})
	})
	if err == nil && len(touched) > 0 {
		if _, ix := st.s.index.current(); ix != nil {
			st.s.reindex(touched)
			st.s.announce(touched)
		}
	}
	return err
}

func (st indexingStore) Update(fn func(store.Tx) error) error {
	return st.run("update", st.Store.Update, fn)
}

func (st indexingStore) View(fn func(store.Tx) error) error {
	defer observeStore("view", time.Now())
	return st.Store.View(fn)
}

// Batch may run fn more than once, and fns of several callers in one transaction: each
// caller's touched things are its own.
func (st indexingStore) Batch(fn func(store.Tx) error) error {
	return st.run("batch", st.Store.Batch, fn)
}

// UpdateIndexingConfiguration validates and applies a thing indexing configuration.
func (s *Service) UpdateIndexingConfiguration(cfg IndexingConfiguration) error {
	switch cfg.ThingIndexingMode {
	case "OFF", "REGISTRY", "REGISTRY_AND_SHADOW":
	default:
		return Errorf(CodeInvalidRequest, "thingIndexingMode %q: use OFF, REGISTRY or REGISTRY_AND_SHADOW", cfg.ThingIndexingMode)
	}
	switch cfg.ThingConnectivityIndexingMode {
	case "", "OFF", "STATUS":
	default:
		return Errorf(CodeInvalidRequest, "thingConnectivityIndexingMode %q: use OFF or STATUS", cfg.ThingConnectivityIndexingMode)
	}
	switch cfg.NamedShadowIndexingMode {
	case "", "OFF":
	case "ON":
		if cfg.ThingIndexingMode != "REGISTRY_AND_SHADOW" {
			return Errorf(CodeInvalidRequest, "namedShadowIndexingMode ON needs thingIndexingMode REGISTRY_AND_SHADOW")
		}
		if cfg.Filter == nil || len(cfg.Filter.NamedShadowNames) == 0 {
			return Errorf(CodeInvalidRequest, "namedShadowIndexingMode ON needs filter.namedShadowNames: the named shadows to index")
		}
	default:
		return Errorf(CodeInvalidRequest, "namedShadowIndexingMode %q: use OFF or ON", cfg.NamedShadowIndexingMode)
	}
	if cfg.Filter != nil {
		if len(cfg.Filter.NamedShadowNames) > maxIndexedShadows {
			return Errorf(CodeInvalidRequest, "filter.namedShadowNames names %d shadows; at most %d may be indexed", len(cfg.Filter.NamedShadowNames), maxIndexedShadows)
		}
		for _, n := range cfg.Filter.NamedShadowNames {
			if !shadowNameRE.MatchString(n) {
				return Errorf(CodeInvalidRequest, "filter.namedShadowNames: %q is not a shadow name", n)
			}
		}
	}
	for _, f := range cfg.CustomFields {
		if f.Name == "" || (f.Type != "Number" && f.Type != "String" && f.Type != "Boolean") {
			return Errorf(CodeInvalidRequest, "customFields: %q of type %q: name a field, of type Number, String or Boolean", f.Name, f.Type)
		}
	}
	if cfg.ThingIndexingMode == "OFF" {
		cfg = IndexingConfiguration{ThingIndexingMode: "OFF"}
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	if err := s.st.Update(func(t store.Tx) error { return t.PutRecord(indexConfigKind, indexConfigName, raw) }); err != nil {
		return err
	}
	if err := s.applyIndexing(cfg); err != nil {
		return err
	}
	s.announce([]string{configChanged})
	return nil
}

// GetIndexingConfiguration returns the configuration, with the managed fields filled in.
func (s *Service) GetIndexingConfiguration() IndexingConfiguration {
	cfg, _ := s.index.current()
	if cfg.ThingIndexingMode != "OFF" {
		cfg.ManagedFields = managedFields
	}
	return cfg
}

// IndexFor returns the index a query names, or AWS's errors.
func (s *Service) IndexFor(name string) (IndexingConfiguration, *fleetindex.Index, error) {
	if name != "" && name != ThingsIndex {
		if name == "AWS_ThingGroups" {
			return IndexingConfiguration{}, nil, Errorf(CodeInvalidRequest, "otaflow serves the thing index (%s) only, not %s", ThingsIndex, name)
		}
		return IndexingConfiguration{}, nil, Errorf(CodeResourceNotFound, "index %s does not exist; the thing index is %s", name, ThingsIndex)
	}
	cfg, ix := s.index.current()
	if ix == nil {
		return cfg, nil, Errorf(CodeResourceNotFound, "index %s does not exist: turn thing indexing on with UpdateIndexingConfiguration (aws iot update-indexing-configuration --thing-indexing-configuration thingIndexingMode=REGISTRY)", ThingsIndex)
	}
	return cfg, ix, nil
}

// CountIndex is how many things a query matches (for tests and tools).
func (s *Service) CountIndex(query string) (int, error) {
	_, ix, err := s.IndexFor(ThingsIndex)
	if err != nil {
		return 0, err
	}
	n, err := ParseQuery(query)
	if err != nil {
		return 0, err
	}
	return ix.Count(n), nil
}

// FieldType is the declared type of an aggregation field (managed or custom); "" when the
// field is not indexed for aggregation.
func FieldType(cfg IndexingConfiguration, field string) string {
	for _, f := range slices.Concat(managedFields, cfg.CustomFields) {
		if f.Name == field {
			return f.Type
		}
	}
	return ""
}

func ParseQuery(q string) (fleetindex.Node, error) {
	n, err := fleetindex.Parse(q)
	if err != nil {
		return nil, Errorf(CodeInvalidQuery, "%v", err)
	}
	return n, nil
}

// IndexOn reports whether thing indexing is on.
func (s *Service) IndexOn() bool {
	_, ix := s.index.current()
	return ix != nil
}
