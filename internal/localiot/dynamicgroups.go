package localiot

import (
	"cmp"
	"errors"
	"slices"
	"strings"
	"sync"

	"github.com/otaflow/otaflow/internal/fleetindex"
	"github.com/otaflow/otaflow/internal/localiot/store"
)

// Dynamic thing groups (CreateDynamicThingGroup, UpdateDynamicThingGroup,
// DeleteDynamicThingGroup): a group whose members are the things a fleet index query matches.
// Membership is kept in the store like a static group's, so jobs (snapshot and continuous),
// ListThingsInThingGroup and ListThingGroupsForThing treat both alike; after every change to a
// thing the index sees, a background pass adds it to the dynamic groups it now matches and
// removes it from those it no longer does, as AWS IoT does (eventually, not within the write).

// MaxDynamicGroups is AWS IoT's quota of dynamic thing groups per account.
const MaxDynamicGroups = 100

// DynamicQueryVersion is the only query version AWS IoT has.
const DynamicQueryVersion = "2017-09-30"

// dynamicGroups are the dynamic groups' parsed queries, and the things waiting for a pass.
type dynamicGroups struct {
	mu      sync.Mutex
	queries map[string]fleetindex.Node
	pending map[string]struct{}
	wake    chan struct{}
}

// loadDynamic reads the dynamic groups' queries and starts the membership pass.
func (s *Service) loadDynamic() error {
	s.dynamic.queries, s.dynamic.pending, s.dynamic.wake = map[string]fleetindex.Node{}, map[string]struct{}{}, make(chan struct{}, 1)
	err := s.st.View(func(t store.Tx) error {
		return t.ForEachGroup(func(g *store.ThingGroup) error {
			if g.Dynamic != nil {
				n, err := fleetindex.Parse(g.Dynamic.QueryString)
				if err != nil {
					s.log.Warn().Err(err).Str("group", g.Name).Msg("dynamic thing group: its query does not parse any more; its membership stays as it is")
					return nil
				}
				s.dynamic.queries[g.Name] = n
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	s.swept.Add(1)
	go s.dynamicLoop()
	return nil
}

// dynamicChanged queues things for the membership pass.
func (s *Service) dynamicChanged(things []string) {
	s.dynamic.mu.Lock()
	if len(s.dynamic.queries) == 0 || s.dynamic.pending == nil {
		s.dynamic.mu.Unlock()
		return
	}
	for _, t := range things {
		s.dynamic.pending[t] = struct{}{}
	}
	s.dynamic.mu.Unlock()
	select {
	case s.dynamic.wake <- struct{}{}:
	default:
	}
}

func (s *Service) dynamicLoop() {
	defer s.swept.Done()
	for {
		select {
		case <-s.stopSweep:
			return
		case <-s.dynamic.wake:
		}
		s.dynamic.mu.Lock()
		things := make([]string, 0, len(s.dynamic.pending))
		for t := range s.dynamic.pending {
			things = append(things, t)
		}
		clear(s.dynamic.pending)
		queries := make(map[string]fleetindex.Node, len(s.dynamic.queries))
		for k, v := range s.dynamic.queries {
			queries[k] = v
		}
		s.dynamic.mu.Unlock()
		slices.Sort(things)
		for _, thing := range things {
			s.syncDynamic(thing, queries)
		}
	}
}

// syncDynamic brings one thing's dynamic group memberships in line with the index.
func (s *Service) syncDynamic(thing string, queries map[string]fleetindex.Node) {
	_, ix := s.index.current()
	if ix == nil {
		return
	}
	groups, err := s.ThingGroupsForThing(thing)
	if err != nil {
		groups = nil // a deleted thing has left every group
	}
	for name, q := range queries {
		want, has := ix.Matches(q, thing), slices.Contains(groups, name)
		if want == has {
			continue
		}
		var err error
		if want {
			err = s.joinGroup(name, thing)
		} else {
			err = s.leaveGroup(name, thing)
		}
		var e *Error
		if err != nil && !(errors.As(err, &e) && e.Code == CodeResourceNotFound) {
			s.log.Warn().Err(err).Str("group", name).Str("thing", thing).Bool("join", want).Msg("dynamic thing group: membership not changed")
		}
	}
}

// dynamicQuery checks a dynamic group's index, query and query version.
func (s *Service) dynamicQuery(name, indexName, query, version string) (*store.DynamicQuery, fleetindex.Node, error) {
	if cfg, ix := s.index.current(); ix == nil || cfg.ThingIndexingMode == "OFF" {
		return nil, nil, Errorf(CodeInvalidRequest, "a dynamic thing group needs fleet indexing: turn thing indexing on first (UpdateIndexingConfiguration)")
	}
	if indexName == "" {
		indexName = ThingsIndex
	}
	if indexName != ThingsIndex {
		return nil, nil, Errorf(CodeResourceNotFound, "index %s does not exist; the thing index is %s", indexName, ThingsIndex)
	}
	if version == "" {
		version = DynamicQueryVersion
	}
	if version != DynamicQueryVersion {
		return nil, nil, Errorf(CodeInvalidRequest, "queryVersion %q: the only query version is %s", version, DynamicQueryVersion)
	}
	n, err := ParseQuery(query)
	if err != nil {
		return nil, nil, err
	}
	if strings.Contains(query, "thingGroupNames") && strings.Contains(query, name) {
		// Its membership would change what it matches, and again, for ever.
		return nil, nil, Errorf(CodeInvalidQuery, "a dynamic thing group's query may not depend on membership of the group itself (thingGroupNames:%s)", name)
	}
	return &store.DynamicQuery{IndexName: indexName, QueryString: query, QueryVersion: version}, n, nil
}

// CreateDynamicThingGroup creates a dynamic group and fills it with the things its query
// matches now.
func (s *Service) CreateDynamicThingGroup(name string, p GroupProperties, indexName, query, version string) (*store.ThingGroup, error) {
	dq, n, err := s.dynamicQuery(name, indexName, query, version)
	if err != nil {
		return nil, err
	}
	if s.quotas {
		s.dynamic.mu.Lock()
		count := len(s.dynamic.queries)
		s.dynamic.mu.Unlock()
		if count >= MaxDynamicGroups {
			return nil, Errorf(CodeLimitExceeded, "this account has %d dynamic thing groups, AWS IoT's limit", count)
		}
	}
	g, err := s.createGroup(name, "", p, dq)
	if err != nil {
		return nil, err
	}
	s.setDynamic(name, n)
	return g, nil
}

// setDynamic installs (n nil: removes) a dynamic group's query and queues every indexed thing
// for the membership pass.
func (s *Service) setDynamic(name string, n fleetindex.Node) {
	s.dynamic.mu.Lock()
	if n == nil {
		delete(s.dynamic.queries, name)
	} else {
		s.dynamic.queries[name] = n
	}
	s.dynamic.mu.Unlock()
	if _, ix := s.index.current(); ix != nil && n != nil {
		all, _ := fleetindex.Parse("*")
		things := ix.Names(all)
		members, err := s.groupMembers(name)
		if err == nil {
			things = append(things, members...)
		}
		s.dynamicChanged(things)
	}
}

func (s *Service) groupMembers(name string) ([]string, error) {
	var out []string
	err := s.st.View(func(t store.Tx) (err error) {
		out, err = t.GroupThings(name)
		return err
	})
	return out, err
}

// UpdateDynamicThingGroup changes a dynamic group's properties and, if given, its query.
func (s *Service) UpdateDynamicThingGroup(name string, p GroupProperties, merge bool, expectedVersion int64, indexName, query, version string) (int64, error) {
	g, err := s.mustDynamic(name)
	if err != nil {
		return 0, err
	}
	var n fleetindex.Node
	var dq *store.DynamicQuery
	if query != "" || indexName != "" || version != "" {
		if dq, n, err = s.dynamicQuery(name, indexName, cmp.Or(query, g.Dynamic.QueryString), version); err != nil {
			return 0, err
		}
	}
	v, err := s.updateGroup(name, p.Description, p.Attributes, merge, expectedVersion, dq)
	if err == nil && n != nil {
		s.setDynamic(name, n)
	}
	return v, err
}

func (s *Service) mustDynamic(name string) (*store.ThingGroup, error) {
	g, err := s.DescribeThingGroup(name)
	if err != nil {
		return nil, err
	}
	if g.Dynamic == nil {
		return nil, Errorf(CodeInvalidRequest, "thing group %s is static: change it with UpdateThingGroup", name)
	}
	return g, nil
}

// DeleteDynamicThingGroup deletes a dynamic group (its things stay).
func (s *Service) DeleteDynamicThingGroup(name string, expectedVersion int64) error {
	g, err := s.DescribeThingGroup(name)
	var e *Error
	if errors.As(err, &e) && e.Code == CodeResourceNotFound {
		return nil // as DeleteThingGroup: deleting what is not there succeeds
	}
	if err != nil {
		return err
	}
	if g.Dynamic == nil {
		return Errorf(CodeInvalidRequest, "thing group %s is static: delete it with DeleteThingGroup", name)
	}
	if expectedVersion != 0 && expectedVersion != g.Version {
		return Errorf(CodeConflict, "thing group %s is at version %d, not %d", name, g.Version, expectedVersion)
	}
	s.setDynamic(name, nil)
	return s.deleteGroup(name, true)
}

// isDynamic reports whether group is a dynamic thing group (whose members only its query
// decides).
func isDynamic(t store.Tx, group string) (bool, error) {
	g, err := t.Group(group)
	if err != nil || g == nil {
		return false, err
	}
	return g.Dynamic != nil, nil
}
