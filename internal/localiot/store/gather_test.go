package store

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestGathererLingersUpToAgeAndSize(t *testing.T) {
	in := make(chan int, 100)
	stop := make(chan struct{})

	// A full batch is cut at max, the rest waits for the next.
	g := newGatherer(in, stop, 10, time.Hour/2, time.Hour)
	for i := range 15 {
		in <- i
	}
	batch, ok := g.next()
	require.True(t, ok)
	require.Equal(t, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, batch)

	// Calls that stop coming end the batch after the linger (not the hour of its age).
	g = newGatherer(in, stop, 10, 5*time.Millisecond, time.Hour)
	batch, ok = g.next()
	require.True(t, ok)
	require.Equal(t, []int{10, 11, 12, 13, 14}, batch)

	// Calls that keep coming, each well within the linger, are cut by the batch's age.
	trickle := make(chan int)
	quit := make(chan struct{})
	defer close(quit)
	go func() {
		for i := 0; ; i++ {
			select {
			case trickle <- i:
			case <-quit:
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	g = newGatherer(trickle, stop, 1_000_000, time.Hour/2, 50*time.Millisecond)
	batch, ok = g.next()
	require.True(t, ok)
	require.NotEmpty(t, batch)
	batch2, ok := g.next()
	require.True(t, ok)
	require.Equal(t, batch[len(batch)-1]+1, batch2[0], "nothing lost between batches")

	// A fixed wait (linger 0): the same, from the first call.
	g = newGatherer(trickle, stop, 1_000_000, 0, 20*time.Millisecond)
	batch, ok = g.next()
	require.True(t, ok)
	require.NotEmpty(t, batch)

	// Closed with nothing waiting: no batch.
	close(stop)
	g = newGatherer(make(chan int), stop, 10, time.Millisecond, time.Hour)
	_, ok = g.next()
	require.False(t, ok)
}
