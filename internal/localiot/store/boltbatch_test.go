package store

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// Concurrent device writes share commits; a call that panics panics in its own caller, and
// the calls batched with it commit; after Close, Batch refuses.
func TestBoltBatcherSharesCommitsAndIsolatesPanics(t *testing.T) {
	st, err := OpenBolt(filepath.Join(t.TempDir(), "jobs.db"))
	require.NoError(t, err)
	const calls = 200
	var wg sync.WaitGroup
	panics := make([]any, calls)
	errs := make([]error, calls)
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { panics[i] = recover() }()
			errs[i] = st.Batch(func(tx Tx) error {
				if err := tx.PutThing(&Thing{Name: fmt.Sprintf("t%03d", i)}); err != nil {
					return err
				}
				if i == 7 {
					panic("call 7's bug")
				}
				return nil
			})
		}()
	}
	wg.Wait()
	for i := range calls {
		if i == 7 {
			require.Equal(t, "call 7's bug", panics[i], "the panic reaches its own caller")
			continue
		}
		require.Nil(t, panics[i], "call %d", i)
		require.NoError(t, errs[i], "call %d", i)
	}
	require.Less(t, st.commits.Load(), int64(calls), "concurrent calls share commits")
	require.NoError(t, st.View(func(tx Tx) error {
		n := 0
		require.NoError(t, tx.ForEachThing(func(th *Thing) error {
			require.NotEqual(t, "t007", th.Name, "the panicking call's write is undone")
			n++
			return nil
		}))
		require.Equal(t, calls-1, n)
		return nil
	}))
	require.NoError(t, st.Close())
	require.ErrorContains(t, st.Batch(func(Tx) error { return nil }), "closed")
}
