package jobs

import (
	"fmt"
	"slices"
	"time"

	"github.com/otaflow/otaflow/internal/arn"

	bolt "go.etcd.io/bbolt"
)

// ThingGroupArn is the ARN of a thing group.
func (s *Service) ThingGroupArn(name string) string {
	return arn.IoT(s.region, s.account, arn.TypeThingGroup, name)
}

// CreateThingGroup creates a static thing group, optionally inside a parent group.
func (s *Service) CreateThingGroup(name, parent string) (*ThingGroup, error) {
	if !thingNameRE.MatchString(name) {
		return nil, errorf(CodeInvalidRequest, "thing group name %q is invalid: use 1-128 characters from a-z A-Z 0-9 : _ -", name)
	}
	var out *ThingGroup
	err := s.st.db.Update(func(tx *bolt.Tx) error {
		t := txn{tx}
		existing, err := t.group(name)
		if err != nil {
			return err
		}
		if existing != nil {
			if existing.Parent != parent {
				return errorf(CodeAlreadyExists, "thing group %s already exists with parent %q", name, existing.Parent)
			}
			out = existing
			return nil
		}
		if parent != "" {
			p, err := t.group(parent)
			if err != nil {
				return err
			}
			if p == nil {
				return errorf(CodeInvalidRequest, "parent thing group %s does not exist; create it first", parent)
			}
		}
		seq, _ := tx.Bucket(bucketGroups).NextSequence()
		out = &ThingGroup{Name: name, Arn: s.ThingGroupArn(name), ID: fmt.Sprintf("g%015x", seq), Parent: parent, CreatedAt: s.clock(), Version: 1}
		return putJSON(tx.Bucket(bucketGroups), []byte(name), out)
	})
	return out, err
}

// DescribeThingGroup returns a thing group.
func (s *Service) DescribeThingGroup(name string) (*ThingGroup, error) {
	return viewOne(s, func(t txn) (*ThingGroup, error) { return t.group(name) }, errorf(CodeResourceNotFound, "thing group %s does not exist", name))
}

// ancestors returns the group and every group above it.
func (t txn) ancestors(name string) ([]string, error) {
	var out []string
	for name != "" && !slices.Contains(out, name) {
		out = append(out, name)
		g, err := t.group(name)
		if err != nil || g == nil {
			return out, err
		}
		name = g.Parent
	}
	return out, nil
}

// members returns a group's things, and with recursive those of every group below it.
func (t txn) members(group string, recursive bool) []string {
	things := t.keysWithPrefix(bucketMembers, group+"\x00")
	if !recursive {
		return things
	}
	seen := map[string]bool{group: true}
	queue := []string{group}
	for len(queue) > 0 {
		g := queue[0]
		queue = queue[1:]
		c := t.tx.Bucket(bucketGroups).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var child ThingGroup
			if getJSONRaw(v, &child) && child.Parent == g && !seen[child.Name] {
				seen[child.Name] = true
				queue = append(queue, child.Name)
				for _, th := range t.keysWithPrefix(bucketMembers, child.Name+"\x00") {
					if !slices.Contains(things, th) {
						things = append(things, th)
					}
				}
			}
		}
	}
	slices.Sort(things)
	return things
}

// AddThingToThingGroup adds a thing to a group. Every IN_PROGRESS CONTINUOUS job that targets
// the group (or a group above it) queues an execution for the thing.
func (s *Service) AddThingToThingGroup(group, thing string) error {
	return s.changeMembership(group, thing, true, func(t txn, jobID string, now time.Time) (bool, error) {
		j, err := t.job(jobID)
		if err != nil || j == nil || j.Status != JobInProgress {
			return false, err
		}
		existing, err := t.execution(jobID, thing)
		if err != nil || (existing != nil && existing.Status != ExecRemoved) {
			return false, err
		}
		if err := s.queueExecution(t, j, thing, now); err != nil {
			return false, err
		}
		return true, t.putJob(j)
	})
}

// RemoveThingFromThingGroup removes a thing from a group. Its QUEUED executions of CONTINUOUS
// jobs that reached it through that group become REMOVED.
func (s *Service) RemoveThingFromThingGroup(group, thing string) error {
	return s.changeMembership(group, thing, false, func(t txn, jobID string, now time.Time) (bool, error) {
		e, err := t.execution(jobID, thing)
		if err != nil || e == nil || e.Status != ExecQueued {
			return false, err
		}
		j, err := t.job(jobID)
		if err != nil {
			return false, err
		}
		return true, s.setStatus(t, j, e, ExecRemoved, nil, now)
	})
}

// changeMembership adds (join) or removes a thing's membership of a group, then calls apply
// for every CONTINUOUS job that targets the group or a group above it; apply reports whether
// the thing's queue changed, so it is notified once the change is durable.
func (s *Service) changeMembership(group, thing string, join bool, apply func(t txn, jobID string, now time.Time) (bool, error)) error {
	changed := false
	err := s.st.db.Update(func(tx *bolt.Tx) error {
		t := txn{tx}
		if err := s.requireGroupAndThing(t, group, thing); err != nil {
			return err
		}
		member, membership := []byte(group+"\x00"+thing), []byte(thing+"\x00"+group)
		for _, kv := range []struct {
			bucket, key []byte
		}{{bucketMembers, member}, {bucketMemberships, membership}} {
			var err error
			if join {
				err = tx.Bucket(kv.bucket).Put(kv.key, nil)
			} else {
				err = tx.Bucket(kv.bucket).Delete(kv.key)
			}
			if err != nil {
				return err
			}
		}
		groups, err := t.ancestors(group)
		if err != nil {
			return err
		}
		now := s.clock()
		for _, g := range groups {
			for _, jobID := range t.keysWithPrefix(bucketGroupJobs, g+"\x00") {
				c, err := apply(t, jobID, now)
				if err != nil {
					return err
				}
				changed = changed || c
			}
		}
		return nil
	})
	if err == nil && changed {
		s.queueChanged([]string{thing})
	}
	return err
}

func (s *Service) requireGroupAndThing(t txn, group, thing string) error {
	g, err := t.group(group)
	if err != nil {
		return err
	}
	if g == nil {
		return errorf(CodeResourceNotFound, "thing group %s does not exist", group)
	}
	th, err := t.thing(thing)
	if err != nil {
		return err
	}
	if th == nil {
		return errorf(CodeResourceNotFound, "thing %s does not exist", thing)
	}
	return nil
}

// ListThingsInThingGroup pages through a group's things in name order.
func (s *Service) ListThingsInThingGroup(group string, recursive bool, max int, token string) ([]string, string, error) {
	var all []string
	err := s.st.db.View(func(tx *bolt.Tx) error {
		t := txn{tx}
		g, err := t.group(group)
		if err != nil {
			return err
		}
		if g == nil {
			return errorf(CodeResourceNotFound, "thing group %s does not exist", group)
		}
		all = t.members(group, recursive)
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	page, next := pageStrings(all, max, token)
	return page, next, nil
}

// pageStrings cuts a sorted list into a page after token.
func pageStrings(all []string, max int, token string) ([]string, string) {
	if max <= 0 || max > 250 {
		max = 250
	}
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
