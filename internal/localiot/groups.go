package localiot

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/otaflow/otaflow/internal/arn"
	"github.com/otaflow/otaflow/internal/localiot/store"
)

// ThingGroupArn is the ARN of a thing group.
func (s *Service) ThingGroupArn(name string) string {
	return arn.IoT(s.region, s.account, arn.TypeThingGroup, name)
}

// GroupProperties are a thing group's thingGroupProperties: its description and attributes.
type GroupProperties struct {
	Description string
	Attributes  map[string]string
}

// CreateThingGroup creates a static thing group, optionally inside a parent group and with
// properties, at version 1.
func (s *Service) CreateThingGroup(name, parent string, p GroupProperties) (*store.ThingGroup, error) {
	return s.createGroup(name, parent, p, nil)
}

// createGroup creates a static group, or (dq set) a dynamic one.
func (s *Service) createGroup(name, parent string, p GroupProperties, dq *store.DynamicQuery) (*store.ThingGroup, error) {
	if !thingNameRE.MatchString(name) {
		return nil, Errorf(CodeInvalidRequest, "thing group name %q is invalid: use 1-128 characters from a-z A-Z 0-9 : _ -", name)
	}
	if len(p.Description) > 2028 {
		return nil, Errorf(CodeInvalidRequest, "thingGroupDescription: at most 2028 characters")
	}
	if err := CheckAttributes(p.Attributes); err != nil {
		return nil, err
	}
	var out *store.ThingGroup
	err := s.st.Update(func(t store.Tx) error {
		existing, err := t.Group(name)
		if err != nil {
			return err
		}
		if existing != nil {
			// As AWS: creating a group again with exactly its properties answers it; with
			// other ones is ResourceAlreadyExists.
			if existing.Parent != parent {
				return Errorf(CodeAlreadyExists, "thing group %s already exists with parent %q", name, existing.Parent)
			}
			if (existing.Dynamic == nil) != (dq == nil) || (dq != nil && *existing.Dynamic != *dq) {
				return Errorf(CodeAlreadyExists, "thing group %s already exists, as another kind of group or with another query", name)
			}
			if existing.Description != p.Description || !maps.Equal(existing.Attributes, p.Attributes) {
				return Errorf(CodeAlreadyExists, "thing group %s already exists with other properties: change them with UpdateThingGroup", name)
			}
			out = existing
			return nil
		}
		if parent != "" {
			p, err := t.Group(parent)
			if err != nil {
				return err
			}
			if p == nil {
				return Errorf(CodeInvalidRequest, "parent thing group %s does not exist; create it first", parent)
			}
			if p.Dynamic != nil {
				return Errorf(CodeInvalidRequest, "thing group %s is dynamic: a dynamic group has no child groups", parent)
			}
		}
		seq, err := t.NextID("group")
		if err != nil {
			return err
		}
		out = &store.ThingGroup{Name: name, Arn: s.ThingGroupArn(name), ID: fmt.Sprintf("g%015x", seq), Parent: parent, CreatedAt: s.Clock(), Version: 1,
			Description: p.Description, Attributes: p.Attributes, Dynamic: dq}
		return t.PutGroup(out)
	})
	return out, err
}

// DescribeThingGroup returns a thing group.
func (s *Service) DescribeThingGroup(name string) (*store.ThingGroup, error) {
	return viewOne(s, func(t store.Tx) (*store.ThingGroup, error) { return t.Group(name) }, Errorf(CodeResourceNotFound, "thing group %s does not exist", name))
}

// ancestors returns the group and every group above it.
func ancestors(t store.Tx, name string) ([]string, error) {
	var out []string
	for name != "" && !slices.Contains(out, name) {
		out = append(out, name)
		g, err := t.Group(name)
		if err != nil || g == nil {
			return out, err
		}
		name = g.Parent
	}
	return out, nil
}

// members returns a group's things, and with recursive those of every group below it.
func members(t store.Tx, group string, recursive bool) ([]string, error) {
	things, err := t.GroupThings(group)
	if err != nil || !recursive {
		return things, err
	}
	children := map[string][]string{}
	if err := t.ForEachGroup(func(g *store.ThingGroup) error {
		children[g.Parent] = append(children[g.Parent], g.Name)
		return nil
	}); err != nil {
		return nil, err
	}
	have := make(map[string]bool, len(things)) // a thing in two groups of the tree counts once
	for _, th := range things {
		have[th] = true
	}
	seen := map[string]bool{group: true}
	queue := []string{group}
	for len(queue) > 0 {
		g := queue[0]
		queue = queue[1:]
		for _, child := range children[g] {
			if seen[child] {
				continue
			}
			seen[child] = true
			queue = append(queue, child)
			more, err := t.GroupThings(child)
			if err != nil {
				return nil, err
			}
			for _, th := range more {
				if !have[th] {
					have[th] = true
					things = append(things, th)
				}
			}
		}
	}
	slices.Sort(things)
	return things, nil
}

// DeleteThingGroup deletes a group; its things leave it. A group with child groups is refused
// (delete those first), as on AWS. Deleting a group that does not exist succeeds.
func (s *Service) DeleteThingGroup(name string) error {
	return s.deleteGroup(name, false)
}

// deleteGroup deletes a static group, or (dynamic) a dynamic one.
func (s *Service) deleteGroup(name string, dynamic bool) error {
	return s.st.Update(func(t store.Tx) error {
		g, err := t.Group(name)
		if err != nil || g == nil {
			return err
		}
		if g.Dynamic != nil && !dynamic {
			return Errorf(CodeInvalidRequest, "thing group %s is dynamic: delete it with DeleteDynamicThingGroup", name)
		}
		var children []string
		if err := t.ForEachGroup(func(c *store.ThingGroup) error {
			if c.Parent == name {
				children = append(children, c.Name)
			}
			return nil
		}); err != nil {
			return err
		}
		if len(children) > 0 {
			return Errorf(CodeInvalidRequest, "thing group %s has child groups (%s): delete them first", name, strings.Join(children, ", "))
		}
		return t.DeleteGroup(name)
	})
}

// AddThingToThingGroup adds a thing to a group. Every IN_PROGRESS CONTINUOUS job that targets
// the group (or a group above it) queues an execution for the thing.
func (s *Service) AddThingToThingGroup(group, thing string) error {
	if err := s.refuseDynamic(group); err != nil {
		return err
	}
	return s.joinGroup(group, thing)
}

// refuseDynamic refuses to change a dynamic group's members by hand.
func (s *Service) refuseDynamic(group string) error {
	return s.st.View(func(t store.Tx) error {
		dyn, err := isDynamic(t, group)
		if err == nil && dyn {
			err = Errorf(CodeInvalidRequest, "thing group %s is dynamic: its query decides its members (change the query with UpdateDynamicThingGroup)", group)
		}
		return err
	})
}

// joinGroup adds a thing to a group.
func (s *Service) joinGroup(group, thing string) error {
	return s.changeMembership(group, thing, true, s.joinJobs(thing))
}

// joinJobs queues a joining thing's execution of each IN_PROGRESS CONTINUOUS job.
func (s *Service) joinJobs(thing string) func(t store.Tx, jobID string, now time.Time) (bool, error) {
	return func(t store.Tx, jobID string, now time.Time) (bool, error) {
		j, err := t.Job(jobID)
		if err != nil || j == nil || j.Status != store.JobInProgress {
			return false, err
		}
		existing, err := t.Execution(jobID, thing)
		if err != nil || (existing != nil && existing.Status != store.ExecRemoved) {
			return false, err
		}
		held, err := s.queueExecution(t, j, thing, now)
		if err != nil {
			return false, err
		}
		return !held, t.PutJob(j)
	}
}

// RemoveThingFromThingGroup removes a thing from a group. Its QUEUED executions of CONTINUOUS
// jobs that reached it through that group become REMOVED.
func (s *Service) RemoveThingFromThingGroup(group, thing string) error {
	if err := s.refuseDynamic(group); err != nil {
		return err
	}
	return s.leaveGroup(group, thing)
}

// leaveGroup removes a thing from a group.
func (s *Service) leaveGroup(group, thing string) error {
	return s.changeMembership(group, thing, false, func(t store.Tx, jobID string, now time.Time) (bool, error) {
		e, err := t.Execution(jobID, thing)
		if err != nil || e == nil || e.Status != store.ExecQueued {
			return false, err
		}
		j, err := t.Job(jobID)
		if err != nil {
			return false, err
		}
		return true, s.setStatus(t, j, e, store.ExecRemoved, nil, now)
	})
}

// changeMembership adds (join) or removes a thing's membership of a group, then calls apply
// for every CONTINUOUS job that targets the group or a group above it; apply reports whether
// the thing's queue changed, so it is notified once the change is durable.
func (s *Service) changeMembership(group, thing string, join bool, apply func(t store.Tx, jobID string, now time.Time) (bool, error)) error {
	changed := false
	// Batched: a rollout adds a wave's devices to its group many at a time, and one fsync
	// then serves many memberships.
	err := s.st.Batch(func(t store.Tx) (err error) {
		changed, err = s.membershipTx(t, group, thing, join, apply) // a batch may run this again
		return err
	})
	if err == nil && changed {
		s.queueChanged([]string{thing})
	}
	return err
}

// membershipTx changes a membership within t and applies the change to every CONTINUOUS job
// of the group and the groups above it; changed: the thing's queue changed.
func (s *Service) membershipTx(t store.Tx, group, thing string, join bool, apply func(t store.Tx, jobID string, now time.Time) (bool, error)) (changed bool, err error) {
	if err := s.requireGroupAndThing(t, group, thing); err != nil {
		return false, err
	}
	if join {
		if err := s.checkJoin(t, group, thing); err != nil {
			return false, err
		}
	}
	if err := t.SetMember(group, thing, join); err != nil {
		return false, err
	}
	groups, err := ancestors(t, group)
	if err != nil {
		return false, err
	}
	now := s.Clock()
	for _, g := range groups {
		jobIDs, err := t.ContinuousJobs(g)
		if err != nil {
			return false, err
		}
		for _, jobID := range jobIDs {
			c, err := apply(t, jobID, now)
			if err != nil {
				return false, err
			}
			changed = changed || c
		}
	}
	return changed, nil
}

func (s *Service) requireGroupAndThing(t store.Tx, group, thing string) error {
	g, err := t.Group(group)
	if err != nil {
		return err
	}
	if g == nil {
		return Errorf(CodeResourceNotFound, "thing group %s does not exist", group)
	}
	th, err := t.Thing(thing)
	if err != nil {
		return err
	}
	if th == nil {
		return Errorf(CodeResourceNotFound, "thing %s does not exist", thing)
	}
	return nil
}

// ListThingsInThingGroup pages through a group's things in name order.
func (s *Service) ListThingsInThingGroup(group string, recursive bool, max int, token string) ([]string, string, error) {
	var all []string
	err := s.st.View(func(t store.Tx) error {
		g, err := t.Group(group)
		if err != nil {
			return err
		}
		if g == nil {
			return Errorf(CodeResourceNotFound, "thing group %s does not exist", group)
		}
		if recursive { // a group without child groups lists the same either way
			hasChildren := false
			if err := t.ForEachGroup(func(c *store.ThingGroup) error {
				hasChildren = hasChildren || c.Parent == group
				return nil
			}); err != nil {
				return err
			}
			recursive = hasChildren
		}
		if !recursive {
			// One page from the index: paging through a million members reads each once,
			// where collecting them all for every page made the walk quadratic.
			all, err = t.GroupThingsAfter(group, token, pageSize(max)+1)
			return err
		}
		all, err = members(t, group, recursive)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	if !recursive {
		if n := pageSize(max); len(all) > n {
			return all[:n], all[n-1], nil
		}
		return all, "", nil
	}
	page, next := PageStrings(all, max, token)
	return page, next, nil
}

// pageSize is a list call's page size: maxResults, at most 250 (AWS's limit).
func pageSize(max int) int {
	if max <= 0 || max > 250 {
		return 250
	}
	return max
}

// ThingGroupsForThing lists the groups a thing belongs to directly, by name.
func (s *Service) ThingGroupsForThing(thing string) ([]string, error) {
	var out []string
	err := s.st.View(func(t store.Tx) error {
		if _, err := mustThing(t, thing); err != nil {
			return err
		}
		var err error
		out, err = t.ThingGroups(thing)
		return err
	})
	slices.Sort(out)
	return out, err
}

// ListThingGroups lists groups by name, optionally only names starting with prefix. AWS
// documents recursive as "if true, return child groups as well": with a parent, its children
// (recursive: all its descendants); without one, every group (recursive false: only the root
// groups, those with no parent). recursive is nil when the caller did not say.
func (s *Service) ListThingGroups(parent, prefix string, recursive *bool) ([]*store.ThingGroup, error) {
	deep := recursive != nil && *recursive
	rootsOnly := parent == "" && recursive != nil && !*recursive
	var out []*store.ThingGroup
	err := s.st.View(func(t store.Tx) error {
		if parent != "" {
			g, err := t.Group(parent)
			if err != nil {
				return err
			}
			if g == nil {
				return Errorf(CodeResourceNotFound, "thing group %s does not exist", parent)
			}
		}
		return t.ForEachGroup(func(g *store.ThingGroup) error {
			if prefix != "" && !strings.HasPrefix(g.Name, prefix) {
				return nil
			}
			if rootsOnly && g.Parent != "" {
				return nil
			}
			if parent != "" {
				anc, err := ancestors(t, g.Name)
				if err != nil {
					return err
				}
				if g.Name == parent || (g.Parent != parent && !(deep && slices.Contains(anc, parent))) {
					return nil
				}
			}
			out = append(out, g)
			return nil
		})
	})
	slices.SortFunc(out, func(a, b *store.ThingGroup) int { return strings.Compare(a.Name, b.Name) })
	return out, err
}

// GroupNameByID finds a thing group by its ID (ListJobs' thingGroupId filter).
func (s *Service) GroupNameByID(id string) (string, error) {
	name := ""
	err := s.st.View(func(t store.Tx) error {
		return t.ForEachGroup(func(g *store.ThingGroup) error {
			if g.ID == id {
				name = g.Name
			}
			return nil
		})
	})
	if err == nil && name == "" {
		err = Errorf(CodeResourceNotFound, "no thing group has ID %s", id)
	}
	return name, err
}

// UpdateThingGroup changes a group's description and attributes (merge as UpdateThing's) and
// returns its new version.
func (s *Service) UpdateThingGroup(name, description string, attrs map[string]string, merge bool, expectedVersion int64) (int64, error) {
	return s.updateGroup(name, description, attrs, merge, expectedVersion, nil)
}

// updateGroup changes a group's properties and, for a dynamic group, its query (dq set).
func (s *Service) updateGroup(name, description string, attrs map[string]string, merge bool, expectedVersion int64, dq *store.DynamicQuery) (int64, error) {
	if len(description) > 2028 {
		return 0, Errorf(CodeInvalidRequest, "thingGroupDescription: at most 2028 characters")
	}
	var version int64
	err := s.st.Update(func(t store.Tx) error {
		g, err := t.Group(name)
		if err != nil {
			return err
		}
		if g == nil {
			return Errorf(CodeResourceNotFound, "thing group %s does not exist", name)
		}
		if expectedVersion != 0 && expectedVersion != g.Version {
			return Errorf(CodeConflict, "thing group %s is at version %d, not the expected %d", name, g.Version, expectedVersion)
		}
		next := mergeAttributes(g.Attributes, attrs, merge)
		if err := CheckAttributes(next); err != nil {
			return err
		}
		g.Description, g.Attributes = description, next
		if dq != nil {
			g.Dynamic = dq
		}
		g.Version++
		version = g.Version
		return t.PutGroup(g)
	})
	return version, err
}

// GroupAncestors is a group and its ancestors, nearest first.
func (s *Service) GroupAncestors(name string) ([]string, error) {
	var out []string
	err := s.st.View(func(t store.Tx) (err error) {
		out, err = ancestors(t, name)
		return err
	})
	return out, err
}

// PageStrings cuts a sorted list into a page of at most max (0: the default) after token,
// and returns the token of the next page.
func PageStrings(all []string, max int, token string) ([]string, string) {
	max = pageSize(max)
	start := 0
	if token != "" {
		start, _ = slices.BinarySearch(all, token)
		if start < len(all) && all[start] == token {
			start++
		}
	}
	end := min(start+max, len(all))
	page := all[start:end]
	if end < len(all) {
		return page, page[len(page)-1]
	}
	return page, ""
}
