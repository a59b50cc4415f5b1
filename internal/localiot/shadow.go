package localiot

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/otaflow/otaflow/internal/iotjobs"
	"github.com/otaflow/otaflow/internal/localiot/store"
)

// Device shadows, classic (unnamed) and named: the AWS IoT Device Shadow service otaflow's agents use to
// keep their inventory (installed versions, last job) where the console reads it, on AWS as
// here. Devices update their shadow over MQTT ($aws/things/THING/shadow/name/NAME/update and
// /get, with /accepted and /rejected replies); services read it over REST (GET
// /things/THING/shadow?name=NAME, the iot-data GetThingShadow call, and POST for
// UpdateThingShadow). A shadow is stored apart from its thing record (one record per shadow),
// so a device's shadow writes never rewrite the thing, and a large shadow slows no other
// device; deleting the thing deletes its shadows.

// ShadowUpdate is an update request's document.
type ShadowUpdate struct {
	State *struct {
		Reported json.RawMessage `json:"reported,omitempty"`
		Desired  json.RawMessage `json:"desired,omitempty"`
	} `json:"state"`
	ClientToken string `json:"clientToken,omitempty"`
	Version     *int64 `json:"version,omitempty"`
}

// AWS's limits: a shadow name of at most 64 of these characters; a shadow's state of 8 KB
// (AWS counts the desired and reported sections of the stored document; the metadata it adds
// does not count). MaxNamedShadows is otaflow's own bound on a thing's named shadows (AWS
// sets none), so no device can fill the store with shadows.
var shadowNameRE = regexp.MustCompile(`^[a-zA-Z0-9:_-]{1,64}$`)

const (
	maxShadowState  = 8 * 1024
	MaxNamedShadows = 10
)

// shadowKind is the store's record kind for a thing's shadows.
func shadowKind(thing string) string { return "shadow/" + thing }

// classicShadowKey is the classic (unnamed) shadow's record name: no shadow name has a "$".
const classicShadowKey = "$classic"

// shadowKey is a shadow's record name ("" is the classic shadow).
func shadowKey(name string) string {
	if name == "" {
		return classicShadowKey
	}
	return name
}

// checkShadowName accepts a shadow name, or "" for the classic shadow.
func checkShadowName(name string) error {
	if name != "" && !shadowNameRE.MatchString(name) {
		return Errorf(CodeInvalidRequest, "shadow name %q: use 1 to 64 of a-z A-Z 0-9 : _ -", name)
	}
	return nil
}

// noShadow is AWS's answer for a shadow that does not exist.
func noShadow(thing, name string) error {
	if name == "" {
		return Errorf(CodeResourceNotFound, "No shadow exists with name: '%s'", thing)
	}
	return Errorf(CodeResourceNotFound, "No shadow exists with name: '%s~%s'", thing, name)
}

// shadowRetention is how long a deleted shadow's version is remembered (AWS: 48 hours).
const shadowRetention = 48 * 60 * 60

// shadowOf reads a thing's named shadow: its own record, or (written by earlier versions)
// the copy kept in the thing record.
func shadowOf(t store.Tx, th *store.Thing, name string) (*store.Shadow, error) {
	raw, err := t.Record(shadowKind(th.Name), shadowKey(name))
	if err != nil || raw == nil {
		return th.Shadows[name], err
	}
	var sh store.Shadow
	if err := json.Unmarshal(raw, &sh); err != nil {
		return nil, fmt.Errorf("corrupt shadow %s of %s: %w", name, th.Name, err)
	}
	return &sh, nil
}

// shadowNames lists a thing's named shadows.
func shadowNames(t store.Tx, th *store.Thing) ([]string, error) {
	bodies, err := t.Records(shadowKind(th.Name))
	if err != nil {
		return nil, err
	}
	var names []string
	for _, raw := range bodies {
		var sh store.Shadow
		if json.Unmarshal(raw, &sh) == nil && sh.Name != "" && sh.Deleted == 0 {
			names = append(names, sh.Name)
		}
	}
	for name := range th.Shadows {
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names, nil
}

// deleteShadows removes every shadow of a thing (with the thing).
func deleteShadows(t store.Tx, th *store.Thing) error {
	names, err := shadowNames(t, th)
	if err != nil {
		return err
	}
	bodies, err := t.Records(shadowKind(th.Name))
	if err != nil {
		return err
	}
	for _, raw := range bodies { // deleted ones (kept for their version) too
		var sh store.Shadow
		if json.Unmarshal(raw, &sh) == nil && sh.Name != "" && !slices.Contains(names, sh.Name) {
			names = append(names, sh.Name)
		}
	}
	for _, name := range append(names, "") {
		if err := t.DeleteRecord(shadowKind(th.Name), shadowKey(name)); err != nil {
			return err
		}
	}
	return nil
}

// ShadowTopic is the topic of a named shadow's operation (iotjobs.ShadowTopic).
var ShadowTopic = iotjobs.ShadowTopic

// ParseShadowTopic reads $aws/things/THING/shadow/name/NAME/OP, or the classic shadow's
// $aws/things/THING/shadow/OP (name ""), for OP update, get or delete.
func ParseShadowTopic(topic string) (thing, name, op string, ok bool) {
	rest, ok := strings.CutPrefix(topic, "$aws/things/")
	if !ok {
		return "", "", "", false
	}
	parts := strings.Split(rest, "/")
	switch {
	case len(parts) == 5 && parts[1] == "shadow" && parts[2] == "name":
		thing, name, op = parts[0], parts[3], parts[4]
	case len(parts) == 3 && parts[1] == "shadow":
		thing, op = parts[0], parts[2]
	default:
		return "", "", "", false
	}
	if op != "update" && op != "get" && op != "delete" {
		return "", "", "", false
	}
	return thing, name, op, true
}

// UpdateShadow merges an update into a thing's named shadow (a null removes a key), as the
// Device Shadow service does, and returns the accepted reply's document.
func (s *Service) UpdateShadow(thing, name string, payload []byte) (map[string]any, error) {
	if err := checkShadowName(name); err != nil {
		return nil, err
	}
	var u ShadowUpdate
	var members map[string]json.RawMessage
	if err := json.Unmarshal(payload, &u); err != nil || json.Unmarshal(payload, &members) != nil {
		return nil, Errorf(CodeInvalidRequest, "Payload contains invalid json")
	}
	// {"state": null} empties the shadow (desired and reported), as AWS documents.
	clearAll := u.State == nil && string(members["state"]) == "null"
	if u.State == nil && !clearAll {
		return nil, Errorf(CodeInvalidRequest, "Missing required node: state")
	}
	if clearAll {
		u.State = &struct {
			Reported json.RawMessage `json:"reported,omitempty"`
			Desired  json.RawMessage `json:"desired,omitempty"`
		}{}
	}
	if len(u.State.Reported)+len(u.State.Desired) > maxShadowState {
		return nil, Errorf(CodeLimitExceeded, "The state of shadow %s is larger than %d bytes", name, maxShadowState)
	}
	var reported, desired map[string]any
	if err := decodeState(u.State.Reported, &reported); err != nil {
		return nil, err
	}
	if err := decodeState(u.State.Desired, &desired); err != nil {
		return nil, err
	}
	now := s.Clock().Unix()
	var out map[string]any
	err := s.st.Batch(func(t store.Tx) error {
		th, err := t.Thing(thing)
		if err != nil {
			return err
		}
		if th == nil {
			return Errorf(CodeResourceNotFound, "thing %s does not exist; register it first (CreateThing)", thing)
		}
		sh, err := shadowOf(t, th, name)
		if err != nil {
			return err
		}
		if sh == nil || sh.Deleted != 0 {
			if name != "" {
				names, err := shadowNames(t, th)
				if err != nil {
					return err
				}
				if len(names) >= MaxNamedShadows {
					return Errorf(CodeLimitExceeded, "thing %s already has %d named shadows (%s), the most otaflow keeps for one thing; delete one or use an existing name", thing, len(names), strings.Join(names, ", "))
				}
			}
			version := int64(0)
			if sh != nil && now-sh.Deleted <= shadowRetention {
				version = sh.Version // created again within 48 hours: its version carries on
			}
			sh = &store.Shadow{Version: version}
		}
		sh.Name = name
		if u.Version != nil && *u.Version != sh.Version {
			return Errorf(CodeConflict, "Version conflict")
		}
		if clearAll {
			sh.Reported, sh.ReportedMeta, sh.Desired, sh.DesiredMeta = nil, nil, nil, nil
		}
		state, meta := map[string]any{}, map[string]any{}
		if reported != nil {
			sh.Reported, sh.ReportedMeta = mergeState(sh.Reported, sh.ReportedMeta, reported, now)
			state["reported"], meta["reported"] = reported, stamp(reported, now)
		}
		if desired != nil {
			sh.Desired, sh.DesiredMeta = mergeState(sh.Desired, sh.DesiredMeta, desired, now)
			state["desired"], meta["desired"] = desired, stamp(desired, now)
		}
		// AWS's limit is on the document as stored: desired and reported together.
		if raw, _ := json.Marshal(map[string]any{"desired": sh.Desired, "reported": sh.Reported}); len(raw) > maxShadowState {
			return Errorf(CodeLimitExceeded, "The state of shadow %s would be %d bytes, larger than %d (desired and reported together); remove keys with null or use another shadow", name, len(raw), maxShadowState)
		}
		sh.Version++
		sh.Timestamp = now
		raw, err := json.Marshal(sh)
		if err != nil {
			return err
		}
		if err := t.PutRecord(shadowKind(thing), shadowKey(name), raw); err != nil {
			return err
		}
		if _, old := th.Shadows[name]; old {
			// Written by an earlier version inside the thing record: it lives apart now.
			delete(th.Shadows, name)
			if err := t.PutThing(th); err != nil {
				return err
			}
		}
		if clearAll {
			state = nil // the accepted document says the state is now null
		}
		out = map[string]any{"state": state, "metadata": meta, "version": sh.Version, "timestamp": now}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if u.ClientToken != "" {
		out["clientToken"] = u.ClientToken
	}
	return out, nil
}

func decodeState(raw json.RawMessage, v *map[string]any) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return Errorf(CodeInvalidRequest, "State contains an invalid node: %v", err)
	}
	return nil
}

// mergeState applies an update to state (and its metadata): objects merge key by key, a null
// deletes, anything else replaces.
func mergeState(state, meta, update map[string]any, now int64) (map[string]any, map[string]any) {
	if state == nil {
		state = map[string]any{}
	}
	if meta == nil {
		meta = map[string]any{}
	}
	for k, v := range update {
		switch v := v.(type) {
		case nil:
			delete(state, k)
			delete(meta, k)
		case map[string]any:
			sub, _ := state[k].(map[string]any)
			subMeta, _ := meta[k].(map[string]any)
			state[k], meta[k] = mergeState(sub, subMeta, v, now)
		default:
			state[k], meta[k] = v, map[string]any{"timestamp": now}
		}
	}
	return state, meta
}

// stamp is the metadata of an update: every leaf's timestamp.
func stamp(update map[string]any, now int64) map[string]any {
	m := map[string]any{}
	for k, v := range update {
		if sub, ok := v.(map[string]any); ok {
			m[k] = stamp(sub, now)
		} else {
			m[k] = map[string]any{"timestamp": now}
		}
	}
	return m
}

// GetShadow returns a thing's named shadow as the Device Shadow service's GetThingShadow does.
func (s *Service) GetShadow(thing, name string) (map[string]any, error) {
	if err := checkShadowName(name); err != nil {
		return nil, err
	}
	var sh *store.Shadow
	err := s.st.View(func(t store.Tx) error {
		th, err := t.Thing(thing)
		if err != nil {
			return err
		}
		if th == nil {
			return Errorf(CodeResourceNotFound, "thing %s does not exist; register it first (CreateThing)", thing)
		}
		sh, err = shadowOf(t, th, name)
		return err
	})
	if err != nil {
		return nil, err
	}
	if sh == nil || sh.Deleted != 0 {
		return nil, noShadow(thing, name)
	}
	state, meta := map[string]any{}, map[string]any{}
	if len(sh.Reported) > 0 {
		state["reported"], meta["reported"] = sh.Reported, sh.ReportedMeta
	}
	if len(sh.Desired) > 0 {
		state["desired"], meta["desired"] = sh.Desired, sh.DesiredMeta
		if d := delta(sh.Desired, sh.Reported); len(d) > 0 {
			state["delta"] = d
		}
	}
	return map[string]any{"state": state, "metadata": meta, "version": sh.Version, "timestamp": sh.Timestamp}, nil
}

// delta is what desired has that reported does not match.
func delta(desired, reported map[string]any) map[string]any {
	d := map[string]any{}
	for k, v := range desired {
		if sub, ok := v.(map[string]any); ok {
			rsub, _ := reported[k].(map[string]any)
			if sd := delta(sub, rsub); len(sd) > 0 {
				d[k] = sd
			}
			continue
		}
		if fmt.Sprint(reported[k]) != fmt.Sprint(v) {
			d[k] = v
		}
	}
	return d
}

// DeleteShadow deletes a thing's shadow (name "" is the classic one) and answers its last
// version, as DeleteThingShadow does. Its version is kept for 48 hours, in case it is created
// again.
func (s *Service) DeleteShadow(thing, name string) (map[string]any, error) {
	if err := checkShadowName(name); err != nil {
		return nil, err
	}
	now := s.Clock().Unix()
	var version int64
	err := s.st.Update(func(t store.Tx) error {
		th, err := mustThing(t, thing)
		if err != nil {
			return err
		}
		sh, err := shadowOf(t, th, name)
		if err != nil {
			return err
		}
		if sh == nil || sh.Deleted != 0 {
			return noShadow(thing, name)
		}
		version = sh.Version
		raw, err := json.Marshal(&store.Shadow{Name: name, Version: sh.Version, Timestamp: now, Deleted: now})
		if err != nil {
			return err
		}
		if _, old := th.Shadows[name]; old {
			delete(th.Shadows, name)
			if err := t.PutThing(th); err != nil {
				return err
			}
		}
		return t.PutRecord(shadowKind(thing), shadowKey(name), raw)
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{"version": version, "timestamp": now}, nil
}

// ListNamedShadows lists a thing's named shadows (not the classic one), by name.
func (s *Service) ListNamedShadows(thing string) ([]string, error) {
	var names []string
	err := s.st.View(func(t store.Tx) error {
		th, err := mustThing(t, thing)
		if err != nil {
			return err
		}
		names, err = shadowNames(t, th)
		return err
	})
	return names, err
}
