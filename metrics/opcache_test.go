package metrics

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/incpathd/incpathd/fpmcall"
	"github.com/incpathd/incpathd/opcache"
	"github.com/incpathd/incpathd/proxy"
)

type fakeOpcache struct{ s *opcache.Snapshot }

func (f fakeOpcache) Snapshot(context.Context) *opcache.Snapshot { return f.s }

// The opcache metrics come from one snapshot; 5xx answers are counted by
// the release they were pinned to.
func TestOpcacheMetrics(t *testing.T) {
	snap := &opcache.Snapshot{
		Status: &fpmcall.OpcacheStatus{UsedMemory: 100, FreeMemory: 50, WastedMemory: 7, Keys: 400, MaxKeys: 983,
			Hits: 90, Misses: 10, ManualRestarts: 2, CacheFull: true},
		Releases: []opcache.ReleaseState{
			{Path: "/srv/releases/B", State: "live", Usage: fpmcall.Usage{Scripts: 200, Bytes: 4096}, Files: 200},
			{Path: "/srv/releases/A", State: "evicted", Usage: fpmcall.Usage{Scripts: 200, Bytes: 4000}},
		},
		Stats: opcache.Stats{Warms: 3, Resets: 1, ResetPauseSeconds: 0.25, LastReset: &opcache.ResetReport{PauseSeconds: 0.25}},
		Gate:  &opcache.GateState{HeldTotal: 12},
	}
	m := New(Sources{Opcache: fakeOpcache{snap}})
	m.RequestDone(proxy.Done{Release: "/srv/releases/B", Status: 502})
	m.RequestDone(proxy.Done{Release: "/srv/releases/B", Status: 200})
	out := scrape(t, m)
	for _, want := range []string{
		`incpathd_opcache_up 1`,
		`incpathd_opcache_memory_bytes{state="wasted"} 7`,
		`incpathd_opcache_hash_slots_used 400`,
		`incpathd_opcache_hash_slots_total 983`,
		`incpathd_opcache_cache_full 1`,
		`incpathd_opcache_restarts_total{reason="manual"} 2`,
		`incpathd_opcache_release_scripts{release="/srv/releases/B",state="live"} 200`,
		`incpathd_opcache_release_bytes{release="/srv/releases/A",state="evicted"} 4000`,
		`incpathd_opcache_release_files{release="/srv/releases/B",state="live"} 200`,
		`incpathd_opcache_warms_total 3`,
		`incpathd_opcache_resets_total 1`,
		`incpathd_opcache_last_reset_pause_seconds 0.25`,
		`incpathd_requests_held_total 12`,
		`incpathd_release_errors_total{release="/srv/releases/B"} 1`,
	} {
		assert.Contains(t, out, want)
	}
	snap.Status = nil
	assert.Contains(t, scrape(t, m), "incpathd_opcache_up 0")
}

// The release label of 5xx answers is bounded.
func TestReleaseErrorsBounded(t *testing.T) {
	e := newReleaseErrors()
	for i := range maxReleaseLabels + 10 {
		e.add(string(rune('a' + i)))
	}
	assert.Len(t, e.seen, maxReleaseLabels)
}
