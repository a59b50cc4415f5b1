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

// Named device shadows: the part of the AWS IoT Device Shadow service otaflow's agents use to
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

// shadowOf reads a thing's named shadow: its own record, or (written by earlier versions)
// the copy kept in the thing record.
func shadowOf(t store.Tx, th *store.Thing, name string) (*store.Shadow, error) {
	raw, err := t.Record(shadowKind(th.Name), name)
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
		if json.Unmarshal(raw, &sh) == nil && sh.Name != "" {
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
	for _, name := range names {
		if err := t.DeleteRecord(shadowKind(th.Name), name); err != nil {
			return err
		}
	}
	return nil
}

// ShadowTopic is the topic of a named shadow's operation (iotjobs.ShadowTopic).
var ShadowTopic = iotjobs.ShadowTopic

// ParseShadowTopic reads $aws/things/THING/shadow/name/NAME/(update|get).
func ParseShadowTopic(topic string) (thing, name, op string, ok bool) {
	rest, ok := strings.CutPrefix(topic, "$aws/things/")
	if !ok {
		return "", "", "", false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 5 || parts[1] != "shadow" || parts[2] != "name" || (parts[4] != "update" && parts[4] != "get") {
		return "", "", "", false
	}
	return parts[0], parts[3], parts[4], true
}

// UpdateShadow merges an update into a thing's named shadow (a null removes a key), as the
// Device Shadow service does, and returns the accepted reply's document.
func (s *Service) UpdateShadow(thing, name string, payload []byte) (map[string]any, error) {
	if !shadowNameRE.MatchString(name) {
		return nil, Errorf(CodeInvalidRequest, "shadow name %q: use 1 to 64 of a-z A-Z 0-9 : _ -", name)
	}
	var u ShadowUpdate
	if err := json.Unmarshal(payload, &u); err != nil {
		return nil, Errorf(CodeInvalidRequest, "Payload contains invalid json")
	}
	if u.State == nil {
		return nil, Errorf(CodeInvalidRequest, "Missing required node: state")
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
		if sh == nil {
			names, err := shadowNames(t, th)
			if err != nil {
				return err
			}
			if len(names) >= MaxNamedShadows {
				return Errorf(CodeLimitExceeded, "thing %s already has %d named shadows (%s), the most otaflow keeps for one thing; delete one or use an existing name", thing, len(names), strings.Join(names, ", "))
			}
			sh = &store.Shadow{}
		}
		sh.Name = name
		if u.Version != nil && *u.Version != sh.Version {
			return Errorf(CodeConflict, "Version conflict: shadow %s is at version %d, not %d", name, sh.Version, *u.Version)
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
		if err := t.PutRecord(shadowKind(thing), name, raw); err != nil {
			return err
		}
		if _, old := th.Shadows[name]; old {
			// Written by an earlier version inside the thing record: it lives apart now.
			delete(th.Shadows, name)
			if err := t.PutThing(th); err != nil {
				return err
			}
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
	if !shadowNameRE.MatchString(name) {
		return nil, Errorf(CodeInvalidRequest, "shadow name %q: use 1 to 64 of a-z A-Z 0-9 : _ -", name)
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
	if sh == nil {
		return nil, Errorf(CodeResourceNotFound, "No shadow exists with name: '%s~%s'", thing, name)
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
