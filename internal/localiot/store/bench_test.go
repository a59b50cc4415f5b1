package store

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

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
			const devices = 256
			if err := stores[0].Update(func(tx Tx) error {
				if err := tx.PutJob(&Job{ID: "bench", Status: JobInProgress, Counts: ProcessDetails{Queued: devices}}); err != nil {
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
			b.ResetTimer()
			for d := range devices {
				wg.Add(1)
				go func() {
					defer wg.Done()
					st := stores[d%replicas]
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
			if err := stores[0].View(func(tx Tx) error {
				j, err := tx.Job("bench")
				if err == nil && j.Counts.Succeeded != b.N {
					return fmt.Errorf("counted %d writes of %d", j.Counts.Succeeded, b.N)
				}
				return err
			}); err != nil {
				b.Fatal(err)
			}
		})
	}
}
