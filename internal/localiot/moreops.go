package localiot

import (
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/otaflow/otaflow/internal/localiot/store"
)

// More of the AWS IoT control plane that OTA tooling calls: UpdateThing, DescribeEndpoint,
// ListThingGroups, ListThingGroupsForThing, UpdateThingGroupsForThing, GetJobDocument,
// DeleteJobExecution and UpdateJob, each with AWS's request validation, response members and
// error types (servicemodel_test.go checks the members against the service model).

// UpdateThing changes a thing's attributes (AWS's attributePayload: with merge, the given
// attributes are added or replaced and an empty value removes one; without, they replace all).
func (s *Service) UpdateThing(name string, attrs map[string]string, merge bool, expectedVersion int64, typeChange ...string) error {
	return s.st.Update(func(t store.Tx) error {
		th, err := t.Thing(name)
		if err != nil {
			return err
		}
		if th == nil {
			return errorf(CodeResourceNotFound, "thing %s does not exist; register it first (CreateThing)", name)
		}
		if expectedVersion != 0 && expectedVersion != th.Version {
			return errorf(CodeConflict, "thing %s is at version %d, not the expected %d", name, th.Version, expectedVersion)
		}
		next := mergeAttributes(th.Attributes, attrs, merge)
		if err := checkAttributes(next); err != nil {
			return err
		}
		if len(typeChange) > 0 { // a new type, or "" to remove it
			if typeChange[0] != "" {
				if err := usableThingType(t, typeChange[0]); err != nil {
					return err
				}
			}
			th.TypeName = typeChange[0]
		}
		th.Attributes = next
		th.Version++
		return t.PutThing(th)
	})
}

// mergeAttributes applies an attributePayload: with merge, attrs are added to or replace the
// current ones; without, they replace them all. An empty value removes an attribute.
func mergeAttributes(current, attrs map[string]string, merge bool) map[string]string {
	next := map[string]string{}
	if merge {
		maps.Copy(next, current)
	}
	for k, v := range attrs {
		if v == "" {
			delete(next, k)
			continue
		}
		next[k] = v
	}
	return next
}

// AWS's limits on thing attributes: at most 50 (for a thing without a type: 3 searchable, but
// every attribute is searchable here), names to 128 and values to 800 of [a-zA-Z0-9_.,@/:#=\[\]-].
func checkAttributes(attrs map[string]string) error {
	if len(attrs) > 50 {
		return errorf(CodeInvalidRequest, "a thing has at most 50 attributes, not %d", len(attrs))
	}
	for k, v := range attrs {
		if len(k) == 0 || len(k) > 128 || !attrCharsOK(k) {
			return errorf(CodeInvalidRequest, "attribute name %q: use 1 to 128 of a-z A-Z 0-9 _ . , @ / : # - [ ] =", k)
		}
		if len(v) > 800 || !attrCharsOK(v) {
			return errorf(CodeInvalidRequest, "attribute %s's value: at most 800 of a-z A-Z 0-9 _ . , @ / : # - [ ] =", k)
		}
	}
	return nil
}

func attrCharsOK(s string) bool {
	for _, c := range s {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.ContainsRune("_.,@/:#-[]=", c)) {
			return false
		}
	}
	return true
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

// ListThingGroups lists groups by name: all, or the children of parent (recursive: all its
// descendants), optionally only names starting with prefix.
func (s *Service) ListThingGroups(parent, prefix string, recursive bool) ([]*store.ThingGroup, error) {
	var out []*store.ThingGroup
	err := s.st.View(func(t store.Tx) error {
		if parent != "" {
			g, err := t.Group(parent)
			if err != nil {
				return err
			}
			if g == nil {
				return errorf(CodeResourceNotFound, "thing group %s does not exist", parent)
			}
		}
		return t.ForEachGroup(func(g *store.ThingGroup) error {
			if prefix != "" && !strings.HasPrefix(g.Name, prefix) {
				return nil
			}
			if parent != "" {
				anc, err := ancestors(t, g.Name)
				if err != nil {
					return err
				}
				if g.Name == parent || (g.Parent != parent && !(recursive && slices.Contains(anc, parent))) {
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

// GetJobDocument returns a job's document, as the devices get it before substitution.
func (s *Service) GetJobDocument(id string) (string, error) {
	j, err := s.jobWithoutTargets(id)
	if err != nil {
		return "", err
	}
	return j.Document, nil
}

// DeleteJobExecution deletes one execution of a job on a thing. As on AWS, an execution that
// is QUEUED or IN_PROGRESS needs force (and a device may then be left mid-update: the agent
// treats the vanished execution as canceled).
func (s *Service) DeleteJobExecution(jobID, thing string, executionNumber int64, force bool) error {
	var touched bool
	err := s.st.Update(func(t store.Tx) error {
		e, err := mustExecution(t, jobID, thing)
		if err != nil {
			return err
		}
		if e.ExecutionNumber != executionNumber {
			return errorf(CodeResourceNotFound, "thing %s has no execution number %d of job %s (it is at %d)", thing, executionNumber, jobID, e.ExecutionNumber)
		}
		if !e.Status.Terminal() && !force {
			return errorf(CodeInvalidStateTransition, "the execution of job %s on %s is %s: delete it with force, or cancel it first", jobID, thing, e.Status)
		}
		j, err := mustJob(t, jobID)
		if err != nil {
			return err
		}
		j.Counts.Add(e.Status, -1)
		if err := t.PutJob(j); err != nil {
			return err
		}
		touched = true
		return t.DeleteExecution(e)
	})
	if err == nil && touched {
		s.queueChanged([]string{thing})
	}
	return err
}

// UpdateJob changes what AWS lets an update change: the description, the presigned URL
// configuration, the rollout rate, the in-progress timeout and the retry configuration.
func (s *Service) UpdateJob(id string, in UpdateJobInput) error {
	if in.Description != nil && len(*in.Description) > 2028 {
		return errorf(CodeInvalidRequest, "description: at most 2028 characters")
	}
	return s.st.Update(func(t store.Tx) error {
		j, err := mustJob(t, id)
		if err != nil {
			return err
		}
		if j.Status == store.JobCompleted || j.Status == store.JobCanceled {
			return errorf(CodeInvalidStateTransition, "job %s is %s: only a job in progress can be updated", id, j.Status)
		}
		if in.Description != nil {
			j.Description = *in.Description
		}
		if in.MaxPerMinute != nil {
			if *in.MaxPerMinute < 1 || *in.MaxPerMinute > 1000 {
				return errorf(CodeInvalidRequest, "jobExecutionsRolloutConfig.maximumPerMinute must be from 1 to 1000")
			}
			j.MaxPerMinute = *in.MaxPerMinute
		}
		if in.InProgressMinutes != nil {
			if *in.InProgressMinutes < 1 || *in.InProgressMinutes > 10080 {
				return errorf(CodeInvalidRequest, "timeoutConfig.inProgressTimeoutInMinutes must be from 1 to 10080")
			}
			j.InProgressTimeout = time.Duration(*in.InProgressMinutes) * time.Minute
		}
		if in.Presign != nil {
			j.Presign = in.Presign
		}
		if in.Retry != nil {
			j.Retry = in.Retry
		}
		if in.Exponential != nil {
			if err := checkExponentialRate(in.Exponential); err != nil {
				return err
			}
			j.Exponential = in.Exponential
		}
		if in.Abort != nil {
			if err := checkAbort(in.Abort); err != nil {
				return err
			}
			j.Abort = in.Abort
		}
		now := s.clock()
		j.LastUpdatedAt = now
		// A tighter abortConfig may already be met.
		if err := s.abortIfDue(t, j, now); err != nil {
			return err
		}
		return t.PutJob(j)
	})
}

// UpdateJobInput is UpdateJob's request; nil members stay as they are.
type UpdateJobInput struct {
	Description       *string
	MaxPerMinute      *int
	InProgressMinutes *int64
	Presign           *store.PresignConfig
	Retry             []store.RetryCriteria
	Abort             []store.AbortCriteria
	Exponential       *store.ExponentialRate
}

func (s *Service) handleUpdateThing(w http.ResponseWriter, r *http.Request) {
	var in struct {
		AttributePayload *struct {
			Attributes map[string]string `json:"attributes"`
			Merge      bool              `json:"merge"`
		} `json:"attributePayload"`
		ExpectedVersion int64  `json:"expectedVersion"`
		ThingTypeName   string `json:"thingTypeName"`
		RemoveThingType bool   `json:"removeThingType"`
	}
	if err := readJSON(r, &in); err != nil {
		writeError(w, err)
		return
	}
	if in.ThingTypeName != "" && in.RemoveThingType {
		writeError(w, errorf(CodeInvalidRequest, "give thingTypeName or removeThingType, not both"))
		return
	}
	var typeChange []string
	switch {
	case in.ThingTypeName != "":
		typeChange = []string{in.ThingTypeName}
	case in.RemoveThingType:
		typeChange = []string{""}
	}
	var attrs map[string]string
	merge := in.AttributePayload == nil // no payload: the attributes stay
	if p := in.AttributePayload; p != nil {
		attrs, merge = p.Attributes, p.Merge
	}
	if err := s.UpdateThing(r.PathValue("thingName"), attrs, merge, in.ExpectedVersion, typeChange...); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, map[string]any{})
}

// endpointTypes are DescribeEndpoint's endpoint types.
var endpointTypes = []string{"iot:Data", "iot:Data-ATS", "iot:CredentialProvider", "iot:Jobs"}

func (s *Service) handleDescribeEndpoint(w http.ResponseWriter, r *http.Request) {
	typ := r.URL.Query().Get("endpointType")
	if typ != "" && !slices.Contains(endpointTypes, typ) {
		writeError(w, errorf(CodeInvalidRequest, "endpointType %q: use one of %s", typ, strings.Join(endpointTypes, ", ")))
		return
	}
	// One address serves every plane here (REST, shadows, jobs); AWS answers a host name.
	host := r.Host
	if u, err := url.Parse(s.baseURL); err == nil && u.Host != "" {
		host = u.Host
	}
	writeJSON(w, map[string]string{"endpointAddress": host})
}

func (s *Service) handleListThingGroupsForThing(w http.ResponseWriter, r *http.Request) {
	max, err := maxResults(r)
	if err != nil {
		writeError(w, err)
		return
	}
	names, err := s.ThingGroupsForThing(r.PathValue("thingName"))
	if err != nil {
		writeError(w, err)
		return
	}
	names, next := pageStrings(names, max, r.URL.Query().Get("nextToken"))
	list := make([]map[string]string, 0, len(names))
	for _, n := range names {
		list = append(list, map[string]string{"groupName": n, "groupArn": s.ThingGroupArn(n)})
	}
	writeJSON(w, page(map[string]any{"thingGroups": list}, next))
}

func (s *Service) handleListThingGroups(w http.ResponseWriter, r *http.Request) {
	max, err := maxResults(r)
	if err != nil {
		writeError(w, err)
		return
	}
	q := r.URL.Query()
	groups, err := s.ListThingGroups(q.Get("parentGroup"), q.Get("namePrefixFilter"), q.Get("recursive") == "true")
	if err != nil {
		writeError(w, err)
		return
	}
	names := make([]string, len(groups))
	for i, g := range groups {
		names[i] = g.Name
	}
	names, next := pageStrings(names, max, q.Get("nextToken"))
	list := make([]map[string]string, 0, len(names))
	for _, n := range names {
		list = append(list, map[string]string{"groupName": n, "groupArn": s.ThingGroupArn(n)})
	}
	writeJSON(w, page(map[string]any{"thingGroups": list}, next))
}

func (s *Service) handleUpdateThingGroupsForThing(w http.ResponseWriter, r *http.Request) {
	var in struct {
		ThingName             string   `json:"thingName"`
		ThingGroupsToAdd      []string `json:"thingGroupsToAdd"`
		ThingGroupsToRemove   []string `json:"thingGroupsToRemove"`
		OverrideDynamicGroups bool     `json:"overrideDynamicGroups"`
	}
	if err := readJSON(r, &in); err != nil {
		writeError(w, err)
		return
	}
	if in.ThingName == "" {
		writeError(w, errorf(CodeInvalidRequest, "thingName is required"))
		return
	}
	if len(in.ThingGroupsToAdd) > 10 || len(in.ThingGroupsToRemove) > 10 {
		writeError(w, errorf(CodeInvalidRequest, "at most 10 groups to add and 10 to remove in one call"))
		return
	}
	// Check everything first, so that a bad name changes nothing.
	for _, g := range append(slices.Clone(in.ThingGroupsToAdd), in.ThingGroupsToRemove...) {
		if _, err := s.DescribeThingGroup(g); err != nil {
			writeError(w, err)
			return
		}
	}
	if _, err := s.DescribeThing(in.ThingName); err != nil {
		writeError(w, err)
		return
	}
	for _, g := range in.ThingGroupsToRemove {
		if err := s.RemoveThingFromThingGroup(g, in.ThingName); err != nil {
			writeError(w, err)
			return
		}
	}
	for _, g := range in.ThingGroupsToAdd {
		if err := s.AddThingToThingGroup(g, in.ThingName); err != nil {
			writeError(w, err)
			return
		}
	}
	writeJSON(w, map[string]any{})
}

func (s *Service) handleGetJobDocument(w http.ResponseWriter, r *http.Request) {
	doc, err := s.GetJobDocument(r.PathValue("jobId"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, map[string]string{"document": doc})
}

func (s *Service) handleDeleteJobExecution(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.ParseInt(r.PathValue("executionNumber"), 10, 64)
	if err != nil || n < 1 {
		writeError(w, errorf(CodeInvalidRequest, "executionNumber %q: a positive number", r.PathValue("executionNumber")))
		return
	}
	if err := s.DeleteJobExecution(r.PathValue("jobId"), r.PathValue("thingName"), n, r.URL.Query().Get("force") == "true"); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (s *Service) handleUpdateJob(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Description                *string `json:"description"`
		JobExecutionsRolloutConfig *struct {
			MaximumPerMinute *int                   `json:"maximumPerMinute"`
			ExponentialRate  *store.ExponentialRate `json:"exponentialRate"`
		} `json:"jobExecutionsRolloutConfig"`
		TimeoutConfig *struct {
			InProgressTimeoutInMinutes *int64 `json:"inProgressTimeoutInMinutes"`
		} `json:"timeoutConfig"`
		PresignedURLConfig *store.PresignConfig `json:"presignedUrlConfig"`
		AbortConfig        *abortConfigJSON     `json:"abortConfig"`
		RetryConfig        *struct {
			CriteriaList []store.RetryCriteria `json:"criteriaList"`
		} `json:"jobExecutionsRetryConfig"`
	}
	if err := readJSON(r, &in); err != nil {
		writeError(w, err)
		return
	}
	abort, err := in.AbortConfig.criteria()
	if err != nil {
		writeError(w, err)
		return
	}
	u := UpdateJobInput{Description: in.Description, Presign: in.PresignedURLConfig, Abort: abort}
	if rc := in.JobExecutionsRolloutConfig; rc != nil {
		u.MaxPerMinute, u.Exponential = rc.MaximumPerMinute, rc.ExponentialRate
	}
	if tc := in.TimeoutConfig; tc != nil {
		u.InProgressMinutes = tc.InProgressTimeoutInMinutes
	}
	if rc := in.RetryConfig; rc != nil {
		u.Retry = rc.CriteriaList
	}
	if err := s.UpdateJob(r.PathValue("jobId"), u); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// groupNameByID finds a thing group by its ID (ListJobs' thingGroupId filter).
func (s *Service) groupNameByID(id string) (string, error) {
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
		err = errorf(CodeResourceNotFound, "no thing group has ID %s", id)
	}
	return name, err
}

// UpdateThingGroup changes a group's description and attributes (merge as UpdateThing's) and
// returns its new version.
func (s *Service) UpdateThingGroup(name, description string, attrs map[string]string, merge bool, expectedVersion int64) (int64, error) {
	if len(description) > 2028 {
		return 0, errorf(CodeInvalidRequest, "thingGroupDescription: at most 2028 characters")
	}
	var version int64
	err := s.st.Update(func(t store.Tx) error {
		g, err := t.Group(name)
		if err != nil {
			return err
		}
		if g == nil {
			return errorf(CodeResourceNotFound, "thing group %s does not exist", name)
		}
		if expectedVersion != 0 && expectedVersion != g.Version {
			return errorf(CodeConflict, "thing group %s is at version %d, not the expected %d", name, g.Version, expectedVersion)
		}
		next := mergeAttributes(g.Attributes, attrs, merge)
		if err := checkAttributes(next); err != nil {
			return err
		}
		g.Description, g.Attributes = description, next
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

// thingGroupPropsJSON is thingGroupProperties as CreateThingGroup and UpdateThingGroup take it.
type thingGroupPropsJSON struct {
	Description      string `json:"thingGroupDescription"`
	AttributePayload *struct {
		Attributes map[string]string `json:"attributes"`
		Merge      bool              `json:"merge"`
	} `json:"attributePayload"`
}

func (p *thingGroupPropsJSON) attributes() map[string]string {
	if p.AttributePayload == nil {
		return nil
	}
	return p.AttributePayload.Attributes
}

func (p *thingGroupPropsJSON) merge() bool {
	return p.AttributePayload != nil && p.AttributePayload.Merge
}

func (s *Service) handleUpdateThingGroup(w http.ResponseWriter, r *http.Request) {
	var in struct {
		ThingGroupProperties *thingGroupPropsJSON `json:"thingGroupProperties"`
		ExpectedVersion      int64                `json:"expectedVersion"`
	}
	if err := readJSON(r, &in); err != nil {
		writeError(w, err)
		return
	}
	if in.ThingGroupProperties == nil {
		writeError(w, errorf(CodeInvalidRequest, "thingGroupProperties is required"))
		return
	}
	p := in.ThingGroupProperties
	v, err := s.UpdateThingGroup(r.PathValue("thingGroupName"), p.Description, p.attributes(), p.merge(), in.ExpectedVersion)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, map[string]int64{"version": v})
}

// AssociateTargetsWithJob adds targets to a CONTINUOUS job in progress (AWS's rule): a thing
// gets an execution now, a group's members now and whoever joins it later.
func (s *Service) AssociateTargetsWithJob(jobID string, targets []string, comment string) (*store.Job, error) {
	if len(targets) == 0 {
		return nil, errorf(CodeInvalidRequest, "targets: give at least one thing or thing-group ARN")
	}
	if len(comment) > 2028 {
		return nil, errorf(CodeInvalidRequest, "comment: at most 2028 characters")
	}
	type target struct{ kind, name string }
	var parsed []target
	for _, tg := range targets {
		kind, name, err := s.parseTarget(tg)
		if err != nil {
			return nil, err
		}
		parsed = append(parsed, target{kind, name})
	}
	var job *store.Job
	var queued []string
	err := s.st.Update(func(t store.Tx) error {
		j, err := t.JobWithTargets(jobID)
		if err != nil {
			return err
		}
		if j == nil {
			return errorf(CodeResourceNotFound, "job %s does not exist", jobID)
		}
		if j.TargetSelection != "CONTINUOUS" {
			return errorf(CodeInvalidRequest, "job %s is a SNAPSHOT job: targets can be associated only with a CONTINUOUS job", jobID)
		}
		if j.Status != store.JobInProgress {
			return errorf(CodeInvalidStateTransition, "job %s is %s: targets can be associated only with a job in progress", jobID, j.Status)
		}
		all := slices.Clone(j.Targets)
		for _, tg := range targets {
			if !slices.Contains(all, tg) {
				all = append(all, tg)
			}
		}
		if err := s.checkTargets(all); err != nil {
			return err
		}
		now := s.clock()
		queue := func(thing string) error {
			if e, err := t.Execution(jobID, thing); err != nil || e != nil {
				return err
			}
			held, err := s.queueExecution(t, j, thing, now)
			if !held {
				queued = append(queued, thing)
			}
			return err
		}
		for _, tg := range parsed {
			if tg.kind != "thinggroup" {
				th, err := t.Thing(tg.name)
				if err != nil {
					return err
				}
				if th == nil {
					return errorf(CodeInvalidRequest, "target thing %s does not exist; register it first (CreateThing)", tg.name)
				}
				if err := queue(tg.name); err != nil {
					return err
				}
				continue
			}
			g, err := t.Group(tg.name)
			if err != nil {
				return err
			}
			if g == nil {
				return errorf(CodeInvalidRequest, "target thing group %s does not exist", tg.name)
			}
			ms, err := members(t, tg.name, true)
			if err != nil {
				return err
			}
			for _, m := range ms {
				if err := queue(m); err != nil {
					return err
				}
			}
			if !slices.Contains(j.TargetGroups, tg.name) {
				j.TargetGroups = append(j.TargetGroups, tg.name)
				if err := t.SetContinuousJob(tg.name, jobID, true); err != nil {
					return err
				}
			}
		}
		j.Targets = all
		if comment != "" {
			j.Comment = comment
		}
		j.LastUpdatedAt = now
		job = j
		if err := t.PutJobTargets(jobID, all); err != nil {
			return err
		}
		return t.PutJob(j)
	})
	if err != nil {
		return nil, err
	}
	s.queueChanged(queued)
	return job, nil
}

func (s *Service) handleAssociateTargetsWithJob(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Targets []string `json:"targets"`
		Comment string   `json:"comment"`
	}
	if err := readJSON(r, &in); err != nil {
		writeError(w, err)
		return
	}
	if err := onlyQuery(r, "namespaceId"); err != nil || r.URL.Query().Get("namespaceId") != "" {
		writeError(w, errorf(CodeInvalidRequest, "namespaceId is not supported by this jobs service"))
		return
	}
	j, err := s.AssociateTargetsWithJob(r.PathValue("jobId"), in.Targets, in.Comment)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, map[string]string{"jobArn": j.Arn, "jobId": j.ID, "description": j.Description})
}
