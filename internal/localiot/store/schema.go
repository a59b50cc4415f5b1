package store

import (
	"encoding/binary"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// schemaVersion is the layout this code reads and writes (meta/schemaVersion). Each upgrade
// takes a database from the version before it; a database from a newer otaflow is refused,
// never half-read.
//
//	0: no version recorded (before schema versions): a job's targets inside its record
//	1: targets apart, in jobTargets
const schemaVersion = 1

var upgrades = map[uint64]func(tx *bolt.Tx) error{
	0: moveTargetsOutOfJobs,
}

// migrate creates the buckets and applies every upgrade the database lacks, in one
// transaction: a crash leaves the old layout or the new one.
func migrate(tx *bolt.Tx) error {
	fresh := tx.Bucket(bucketJobs) == nil
	for _, b := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return err
		}
	}
	meta := tx.Bucket(bucketMeta)
	var v uint64
	if raw := meta.Get(keySchemaVersion); raw != nil {
		if len(raw) != 8 {
			return fmt.Errorf("corrupt schema version %x", raw)
		}
		v = binary.BigEndian.Uint64(raw)
	} else if fresh {
		v = schemaVersion
	}
	if v > schemaVersion {
		return fmt.Errorf("it has schema version %d, written by a newer otaflow; this one reads up to %d: upgrade otaflow", v, schemaVersion)
	}
	for ; v < schemaVersion; v++ {
		if err := upgrades[v](tx); err != nil {
			return fmt.Errorf("upgrade the schema from version %d: %w", v, err)
		}
	}
	return meta.Put(keySchemaVersion, seqBytes(schemaVersion))
}

// moveTargetsOutOfJobs (0 → 1) moves each job's target list from its record to jobTargets.
func moveTargetsOutOfJobs(tx *bolt.Tx) error {
	jobs, targets := tx.Bucket(bucketJobs), tx.Bucket(bucketJobTargets)
	type move struct {
		key, record []byte
		targets     []string
	}
	var moves []move
	err := jobs.ForEach(func(k, v []byte) error {
		var rec map[string]json.RawMessage
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("corrupt job %q: %w", k, err)
		}
		raw, ok := rec["targets"]
		if !ok {
			return nil
		}
		var ts []string
		if err := json.Unmarshal(raw, &ts); err != nil {
			return fmt.Errorf("corrupt targets of job %q: %w", k, err)
		}
		delete(rec, "targets")
		stripped, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		moves = append(moves, move{append([]byte(nil), k...), stripped, ts})
		return nil
	})
	if err != nil {
		return err
	}
	for _, m := range moves {
		if targets.Get(m.key) == nil {
			if err := putJSON(targets, m.key, m.targets); err != nil {
				return err
			}
		}
		if err := jobs.Put(m.key, m.record); err != nil {
			return err
		}
	}
	return nil
}
