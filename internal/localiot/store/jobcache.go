package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"slices"
	"sync"
	"time"
	"unicode/utf8"
)

// jobCache keeps decoded jobs beside the exact bytes they stand for. Every device operation
// reads its job, and most write it back with new counters; decoding the job's JSON (its
// document, escaped, included) twice for each of 100,000 devices was 6 % of the stack's CPU in
// a rollout. A cached job is served only while the stored bytes are the very bytes it stands
// for (compared byte by byte, not hashed), so neither a rolled-back transaction nor another
// writer can make it serve a stale job: a job whose bytes changed is decoded again.
//
// What the cache holds is what json.Unmarshal would make of the bytes: entries come from a
// decode, or from a PutJob whose job survives the round trip unchanged (canonical: see
// roundTrips); OTAFLOW_VERIFY_JOB_CACHE=1, which `make test` sets, checks every hit against a
// fresh decode.
type jobCache struct {
	mu   sync.Mutex
	jobs map[string]cachedJob
}

type cachedJob struct {
	raw []byte
	job *Job
}

// maxCachedJobs bounds the cache (a job with its document is a few KB); past it the cache
// starts over. A rollout has a few jobs open at once.
const maxCachedJobs = 256

var verifyJobCache = os.Getenv("OTAFLOW_VERIFY_JOB_CACHE") != ""

// get returns a copy of the job raw encodes, if cached.
func (c *jobCache) get(id string, raw []byte) *Job {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	e, ok := c.jobs[id]
	c.mu.Unlock()
	if !ok || !bytes.Equal(e.raw, raw) {
		return nil
	}
	j := e.job.clone()
	if verifyJobCache {
		var want Job
		if err := json.Unmarshal(raw, &want); err != nil || !reflect.DeepEqual(&want, j) {
			panic(fmt.Sprintf("job cache: %s served %+v, its bytes decode to %+v (%v)", id, j, &want, err))
		}
	}
	return j
}

// put remembers that raw (which the cache keeps: the caller must not change it) decodes to j
// (which the cache copies).
func (c *jobCache) put(id string, raw []byte, j *Job) {
	if c == nil {
		return
	}
	cp := j.clone()
	c.mu.Lock()
	if c.jobs == nil || len(c.jobs) >= maxCachedJobs {
		c.jobs = make(map[string]cachedJob)
	}
	c.jobs[id] = cachedJob{raw: raw, job: cp}
	c.mu.Unlock()
}

// clone copies j deep enough that nothing the copy's holder changes reaches the original: its
// slices and the structs it points to are copied too. Targets, stored apart (PutJobTargets),
// are not part of the job's record and are left out.
func (j *Job) clone() *Job {
	cp := *j
	cp.Targets = nil
	cp.TargetGroups = slices.Clone(j.TargetGroups)
	cp.Retry = slices.Clone(j.Retry)
	cp.Abort = slices.Clone(j.Abort)
	if j.Presign != nil {
		p := *j.Presign
		cp.Presign = &p
	}
	if j.Scheduling != nil {
		s := *j.Scheduling
		s.MaintenanceWindows = slices.Clone(s.MaintenanceWindows)
		cp.Scheduling = &s
	}
	if j.Exponential != nil {
		e := *j.Exponential
		cp.Exponential = &e
	}
	return &cp
}

// roundTrips says whether j, as it is, is what decoding its JSON gives back: times in UTC
// without a monotonic reading (the service's clock gives those), no empty-but-not-nil slice
// that omitempty drops, strings that are valid UTF-8 (encoding replaces what is not). A job
// that is not is still stored, just not cached from the write: its next read decodes it.
func (j *Job) roundTrips() bool {
	times := []time.Time{j.CreatedAt, j.LastUpdatedAt, j.CompletedAt, j.RateWindow}
	strs := []string{j.ID, j.Arn, j.Document, j.DocumentSource, j.Description, j.TargetSelection, string(j.Status), j.Comment, j.ReasonCode}
	strs = append(strs, j.TargetGroups...)
	for _, r := range j.Retry {
		strs = append(strs, r.FailureType)
	}
	for _, a := range j.Abort {
		strs = append(strs, a.FailureType, a.Action)
	}
	if j.Presign != nil {
		strs = append(strs, j.Presign.RoleArn)
	}
	empty := j.TargetGroups != nil && len(j.TargetGroups) == 0 || j.Retry != nil && len(j.Retry) == 0 || j.Abort != nil && len(j.Abort) == 0
	if s := j.Scheduling; s != nil {
		times = append(times, s.Start, s.End)
		strs = append(strs, s.StartTime, s.EndTime, s.EndBehavior)
		for _, w := range s.MaintenanceWindows {
			strs = append(strs, w.StartTime)
		}
		empty = empty || s.MaintenanceWindows != nil && len(s.MaintenanceWindows) == 0
	}
	if empty {
		return false
	}
	for _, t := range times {
		if t != t.Round(0).UTC() && t != (time.Time{}) {
			return false
		}
	}
	for _, v := range strs {
		if !utf8.ValidString(v) {
			return false
		}
	}
	return true
}
