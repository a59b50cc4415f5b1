package store

import (
	"encoding/binary"
	"strings"
	"time"
)

// The bbolt layout: one bucket per kind of record, keys built only here. Parts of composite
// keys are joined by \x00, which no thing name, group name or job ID may contain.
var (
	bucketMeta   = []byte("meta")   // schemaVersion, secrets
	bucketThings = []byte("things") // thing name → Thing
	bucketJobs   = []byte("jobs")   // job ID → Job (without targets)
	// bucketJobTargets holds each job's target list, read only by DescribeJob: every device
	// operation reads the job, and decoding thousands of targets each time made a wave
	// quadratic.
	bucketJobTargets  = []byte("jobTargets")
	bucketExecs       = []byte("executions")        // jobID \x00 thing → Execution
	bucketQueue       = []byte("thing-queues")      // thing \x00 jobID → seq(8): a thing's jobs
	bucketGroups      = []byte("thing-groups")      // group name → ThingGroup
	bucketMembers     = []byte("group-members")     // group \x00 thing → ∅
	bucketMemberships = []byte("thing-memberships") // thing \x00 group → ∅
	bucketGroupJobs   = []byte("group-jobs")        // group \x00 jobID → ∅: CONTINUOUS jobs of a group
	bucketTimeouts    = []byte("timeouts")          // deadline(8, unix ns) ‖ jobID \x00 thing → ∅
	bucketTokens      = []byte("client-tokens")     // client token → TokenRecord
	bucketHeld        = []byte("held")              // jobID \x00 seq(8) \x00 thing → ∅, in queue order
	bucketRecords     = []byte("records")           // kind \x00 name → JSON (thing types, job templates)

	allBuckets = [][]byte{bucketMeta, bucketThings, bucketJobs, bucketJobTargets, bucketExecs, bucketQueue, bucketGroups,
		bucketMembers, bucketMemberships, bucketGroupJobs, bucketTimeouts, bucketTokens, bucketHeld, bucketRecords}

	keySchemaVersion = []byte("schemaVersion")
)

func nameKey(name string) []byte { return []byte(name) }

// pairKey is a \x00 b; pairPrefix is what every pairKey(a, …) starts with.
func pairKey(a, b string) []byte               { return []byte(a + "\x00" + b) }
func pairPrefix(a string) []byte               { return []byte(a + "\x00") }
func execKey(jobID, thing string) []byte       { return pairKey(jobID, thing) }
func queueKey(thing, jobID string) []byte      { return pairKey(thing, jobID) }
func memberKey(group, thing string) []byte     { return pairKey(group, thing) }
func membershipKey(thing, group string) []byte { return pairKey(thing, group) }
func groupJobKey(group, jobID string) []byte   { return pairKey(group, jobID) }

func seqBytes(n uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], n)
	return b[:]
}

func timeoutKey(deadline time.Time, jobID, thing string) []byte {
	return append(seqBytes(uint64(deadline.UnixNano())), execKey(jobID, thing)...)
}

func parseTimeoutKey(k []byte) (TimeoutEntry, bool) {
	if len(k) < 9 {
		return TimeoutEntry{}, false
	}
	jobID, thing, ok := strings.Cut(string(k[8:]), "\x00")
	return TimeoutEntry{Deadline: time.Unix(0, int64(binary.BigEndian.Uint64(k[:8]))), JobID: jobID, Thing: thing,
		key: append([]byte(nil), k...)}, ok
}

func heldKey(jobID string, seq uint64, thing string) []byte {
	return append(append(pairPrefix(jobID), seqBytes(seq)...), "\x00"+thing...)
}

// parseHeldSuffix reads seq(8) \x00 thing, what follows a hold key's job prefix.
func parseHeldSuffix(rest []byte) (HeldEntry, bool) {
	if len(rest) < 10 || rest[8] != 0 {
		return HeldEntry{}, false
	}
	return HeldEntry{Seq: binary.BigEndian.Uint64(rest[:8]), Thing: string(rest[9:])}, true
}
