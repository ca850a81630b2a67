package inflight

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// sweepAt is how many counters the Tracker holds before adding another
// first drops the idle ones. Releases come and go with deploys, a few a
// day; the bound only matters for a front end that sends many docroots.
const sweepAt = 256

// Tracker counts requests in flight per release. The zero Tracker is ready
// to use; a nil *Tracker counts nothing. A Tracker must not be copied after
// first use.
type Tracker struct {
	m       sync.Map // release path -> *Counter
	entries atomic.Int64
}

// Counter is the in-flight count of one release, returned by Acquire.
type Counter struct {
	// n is the count; retired (-1) once a sweep removed the counter from
	// the map. Acquire and the sweep both change it by compare-and-swap,
	// so a request can never count itself on a counter that is gone.
	n       atomic.Int64
	release string
	// Counters are separate allocations; keep two releases' counters off
	// one cache line during a flip, when both are busy.
	_ [48]byte
}

const retired = -1

// Acquire counts one more request in flight on release and returns its
// counter; call Done on it when the request ends. An empty release, or a
// nil Tracker, counts nothing and returns nil, on which Done does nothing.
// release may be a transient string: the Tracker copies what it keeps.
func (t *Tracker) Acquire(release string) *Counter {
	if t == nil || release == "" {
		return nil
	}
	for {
		v, ok := t.m.Load(release)
		if !ok {
			v = t.add(release)
		}
		c := v.(*Counter)
		for {
			n := c.n.Load()
			if n == retired {
				break
			}
			if c.n.CompareAndSwap(n, n+1) {
				return c
			}
		}
		// Swept between Load and CompareAndSwap: help remove it, then
		// start over with a new counter.
		if t.m.CompareAndDelete(c.release, c) {
			t.entries.Add(-1)
		}
	}
}

// add stores a new counter for release unless one is there already, and
// returns the one stored.
func (t *Tracker) add(release string) any {
	if t.entries.Load() >= sweepAt {
		t.sweep()
	}
	c := &Counter{release: strings.Clone(release)}
	v, loaded := t.m.LoadOrStore(c.release, c)
	if !loaded {
		t.entries.Add(1)
	}
	return v
}

// Done counts the request as ended. Call it once per Acquire.
func (c *Counter) Done() {
	if c != nil {
		c.n.Add(-1)
	}
}

// Release returns the release the counter counts, "" for nil.
func (c *Counter) Release() string {
	if c == nil {
		return ""
	}
	return c.release
}

// Release is a release and its count of requests in flight.
type Release struct {
	Path     string `json:"path"`
	InFlight int64  `json:"in_flight"`
}

// Snapshot returns the releases with requests in flight, sorted by path.
// It also drops the counters of idle releases.
func (t *Tracker) Snapshot() []Release {
	if t == nil {
		return nil
	}
	var out []Release
	t.m.Range(func(k, v any) bool {
		c := v.(*Counter)
		if c.n.CompareAndSwap(0, retired) {
			if t.m.CompareAndDelete(k, c) {
				t.entries.Add(-1)
			}
			return true
		}
		if n := c.n.Load(); n > 0 {
			out = append(out, Release{Path: c.release, InFlight: n})
		}
		return true
	})
	slices.SortFunc(out, func(a, b Release) int { return strings.Compare(a.Path, b.Path) })
	return out
}

// InFlight returns the number of requests in flight on release.
func (t *Tracker) InFlight(release string) int64 {
	if t == nil {
		return 0
	}
	v, ok := t.m.Load(release)
	if !ok {
		return 0
	}
	return max(v.(*Counter).n.Load(), 0)
}

// sweep drops the counters of idle releases.
func (t *Tracker) sweep() {
	t.m.Range(func(k, v any) bool {
		c := v.(*Counter)
		if c.n.CompareAndSwap(0, retired) && t.m.CompareAndDelete(k, c) {
			t.entries.Add(-1)
		}
		return true
	})
}
