package inflight

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAcquireDone(t *testing.T) {
	var tr Tracker
	a1 := tr.Acquire("/srv/releases/A")
	a2 := tr.Acquire("/srv/releases/A")
	b := tr.Acquire("/srv/releases/B")
	assert.Same(t, a1, a2, "one counter per release")
	assert.Equal(t, "/srv/releases/A", a1.Release())
	assert.Equal(t, []Release{{"/srv/releases/A", 2}, {"/srv/releases/B", 1}}, tr.Snapshot())

	a1.Done()
	assert.EqualValues(t, 1, tr.InFlight("/srv/releases/A"))
	a2.Done()
	b.Done()
	assert.Empty(t, tr.Snapshot())
	assert.Zero(t, tr.entries.Load(), "idle counters were swept")
	assert.Zero(t, tr.InFlight("/srv/releases/A"))

	// A swept release counts again from a new counter.
	c := tr.Acquire("/srv/releases/A")
	assert.NotSame(t, a1, c)
	assert.Equal(t, []Release{{"/srv/releases/A", 1}}, tr.Snapshot())
	c.Done()
}

func TestNilAndEmpty(t *testing.T) {
	var nilTracker *Tracker
	c := nilTracker.Acquire("/srv/releases/A")
	assert.Nil(t, c)
	c.Done() // no panic
	assert.Empty(t, nilTracker.Snapshot())
	assert.Zero(t, nilTracker.InFlight("/srv/releases/A"))

	var tr Tracker
	assert.Nil(t, tr.Acquire(""), "a request without a release is not counted")
	assert.Empty(t, tr.Snapshot())
}

func TestCopiesRelease(t *testing.T) {
	var tr Tracker
	b := []byte("/srv/releases/A")
	c := tr.Acquire(string(b))
	copy(b, "/XXXXXXXXXXXXXX")
	assert.Equal(t, "/srv/releases/A", c.Release())
	assert.Equal(t, []Release{{"/srv/releases/A", 1}}, tr.Snapshot())
	c.Done()
}

// Sweeps racing with requests never lose a request that is in flight:
// whatever the interleaving, a snapshot counts every request held.
func TestSweepNeverLosesARequest(t *testing.T) {
	var tr Tracker
	const held = 3
	const release = "/srv/releases/A"
	var stop atomic.Bool
	var wg sync.WaitGroup
	// Churn: short requests on the same release and on others, so the
	// counter keeps dropping to zero, being swept and coming back.
	for g := range 4 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				r := release
				if i%2 == 1 {
					r = fmt.Sprintf("/srv/releases/%d", (g*7+i)%300) // over sweepAt
				}
				tr.Acquire(r).Done()
			}
		})
	}
	wg.Go(func() {
		for !stop.Load() {
			tr.sweep()
		}
	})
	var counters []*Counter
	for range held {
		counters = append(counters, tr.Acquire(release))
	}
	for i := range 2000 {
		got := tr.InFlight(release)
		for _, r := range tr.Snapshot() {
			if r.Path == release {
				got = max(got, r.InFlight)
			}
		}
		if got < held {
			stop.Store(true)
			wg.Wait()
			t.Fatalf("snapshot %d: %d in flight on %s; want at least %d", i, got, release, held)
		}
	}
	stop.Store(true)
	wg.Wait()
	for _, c := range counters {
		c.Done()
	}
	assert.Empty(t, tr.Snapshot(), "every request ended")
}

func TestBounded(t *testing.T) {
	var tr Tracker
	for i := range 10 * sweepAt {
		tr.Acquire(fmt.Sprintf("/srv/releases/%d", i)).Done()
	}
	require.LessOrEqual(t, tr.entries.Load(), int64(sweepAt+1))
	n := 0
	tr.m.Range(func(any, any) bool { n++; return true })
	assert.EqualValues(t, tr.entries.Load(), n, "entries counts the map")
}
