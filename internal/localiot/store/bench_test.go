package store

import (
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/otaflow/otaflow/internal/pgtest"
)

// BenchmarkPostgresDeviceWrites measures the write path a device request takes (read the
// execution and its job, move the execution on, count it), from 256 devices at once, through
// one store and through two stores (two replicas) on one database: writes per second, with
// no broker or agents beside them.
//
//	go run ./internal/pgtest/withpg -- go test -run '^$' -bench PostgresDeviceWrites -benchtime 20000x ./internal/localiot/store/
func BenchmarkPostgresDeviceWrites(b *testing.B) {
	for _, replicas := range []int{1, 2} {
		b.Run(fmt.Sprintf("replicas=%d", replicas), func(b *testing.B) {
			url := pgtest.DB(b)
			stores := make([]*pgStore, replicas)
			for i := range stores {
				st, err := OpenPostgres(url)
				if err != nil {
					b.Fatal(err)
				}
				defer st.Close()
				stores[i] = st
			}
			ss := make([]Store, len(stores))
			for i, st := range stores {
				ss[i] = st
			}
			benchDeviceWrites(b, ss)
		})
	}
}

// BenchmarkBoltDeviceWrites is the same write path on the embedded store (one file, one
// writer: its batches are what makes it fast).
//
//	go test -run '^$' -bench BoltDeviceWrites -benchtime 20000x ./internal/localiot/store/
func BenchmarkBoltDeviceWrites(b *testing.B) {
	st, err := OpenBolt(filepath.Join(b.TempDir(), "jobs.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	benchDeviceWrites(b, []Store{st})
}

// benchDocument is a job document the size of a rollout's (its artifact's presigned URL and
// signed target), escaped as the job's record holds it.
var benchDocument = `{"operation":"otaflow.update","schemaVersion":"1.0","rolloutId":"r-2026-12-05","softwareToUpdate":"core","version":"2.4.1",` +
	`"artifact":{"url":"${aws:iot:s3-presigned-url:https://s3.amazonaws.com/otaflow-artifacts/core/2.4.1.tar.gz}","size":52428800,` +
	`"sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},"tuf":{"targetsVersion":42,"snapshotVersion":42,` +
	`"timestampVersion":4242,"custom":{"software":"core","version":"2.4.1","os":"linux","architecture":"aarch64"}},` +
	`"health":{"checks":["systemctl is-active otaflow-app","curl -fsS http://127.0.0.1:8080/healthz"],"windowSeconds":300},` +
	`"description":"core 2.4.1: fixes the watchdog's reboot loop on boards with a slow eMMC; see the release notes at https://example.com/notes/2.4.1"}`

func benchDeviceWrites(b *testing.B, stores []Store) {
	const devices = 256
	if err := stores[0].Update(func(tx Tx) error {
		if err := tx.PutJob(&Job{ID: "bench", Status: JobInProgress, Counts: ProcessDetails{Queued: devices}, Document: benchDocument}); err != nil {
			return err
		}
		for d := range devices {
			if err := tx.PutExecution(&Execution{JobID: "bench", ThingName: fmt.Sprintf("dev-%03d", d), Status: ExecQueued, Seq: uint64(d)}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	cpu0 := cpuTime()
	b.ResetTimer()
	for d := range devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := stores[d%len(stores)]
			thing := fmt.Sprintf("dev-%03d", d)
			for next.Add(1) <= int64(b.N) {
				err := st.Batch(func(tx Tx) error {
					e, err := tx.Execution("bench", thing)
					if err != nil {
						return err
					}
					j, err := tx.Job("bench")
					if err != nil {
						return err
					}
					j.Counts.Succeeded++ // one more report counted
					e.VersionNumber++
					if err := tx.PutExecution(e); err != nil {
						return err
					}
					return tx.PutJob(j)
				})
				if err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/write")
	if err := stores[0].View(func(tx Tx) error {
		j, err := tx.Job("bench")
		if err == nil && j.Counts.Succeeded != b.N {
			return fmt.Errorf("counted %d writes of %d", j.Counts.Succeeded, b.N)
		}
		return err
	}); err != nil {
		b.Fatal(err)
	}
}

// cpuTime is the CPU this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
