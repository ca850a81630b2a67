package opcache

import (
	"context"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/incpathd/incpathd/fpmcall"
)

// Release states in a Snapshot.
const (
	StateLive     = "live"     // new requests go to it
	StateWarmed   = "warmed"   // warmed, not live yet
	StateDraining = "draining" // no longer live, still in use
	StateDrained  = "drained"  // unused, scripts about to be evicted
	StateEvicted  = "evicted"  // its scripts invalidated (memory wasted until a reset)
)

// ReleaseState is one release in a Snapshot.
type ReleaseState struct {
	Path  string `json:"path"`
	State string `json:"state"`
	fpmcall.Usage
	// Files is the PHP files the last warm found in it; 0 if never
	// warmed by this process.
	Files int `json:"files"`
	// Busy says why a release that is not live is still in use.
	Busy []string `json:"busy,omitempty"`
}

// Snapshot is opcache as a person or a scrape reads it.
type Snapshot struct {
	// Error is why opcache could not be read ("" if it could); the
	// other fields but Stats are then empty.
	Error    string                 `json:"error,omitempty"`
	Status   *fpmcall.OpcacheStatus `json:"status,omitempty"`
	Releases []ReleaseState         `json:"releases"`
	Stats    Stats                  `json:"stats"`
	// Gate is the request hold used by resets.
	Gate *GateState `json:"gate,omitempty"`
	At   time.Time  `json:"at"`
}

// GateState is the quiesce gate as shown.
type GateState struct {
	Closed            bool    `json:"closed"`
	Held              int64   `json:"held"`
	HeldTotal         int64   `json:"held_total"`
	Pauses            int64   `json:"pauses"`
	LastPauseSeconds  float64 `json:"last_pause_seconds"`
	TotalPauseSeconds float64 `json:"total_pause_seconds"`
}

// snapshotTTL is how long a Snapshot is reused: a scrape and a status
// screen read it at once, and each reading is a request to php-fpm.
const snapshotTTL = time.Second

type snapCache struct {
	mu   sync.Mutex
	last *Snapshot
}

// Snapshot reads opcache's state, with the scripts of each known release,
// at most once a second.
func (m *Manager) Snapshot(ctx context.Context) *Snapshot {
	m.snap.mu.Lock()
	defer m.snap.mu.Unlock()
	if s := m.snap.last; s != nil && time.Since(s.At) < snapshotTTL {
		return s
	}
	s := m.snapshot(ctx)
	m.snap.last = s
	return s
}

func (m *Manager) snapshot(ctx context.Context) *Snapshot {
	s := &Snapshot{At: time.Now(), Releases: []ReleaseState{}}
	if m.Gate != nil {
		g := m.Gate.Stats()
		s.Gate = &GateState{Closed: g.Closed, Held: g.Held, HeldTotal: g.HeldTotal, Pauses: g.Pauses,
			LastPauseSeconds: g.LastPause.Seconds(), TotalPauseSeconds: g.Paused.Seconds()}
	}
	m.mu.Lock()
	states := map[string]*release{}
	for k, v := range m.known {
		c := *v
		states[k] = &c
	}
	m.mu.Unlock()
	live := map[string]bool{}
	roots := []string{}
	for _, l := range m.live() {
		live[m.rootOfIn(states, l)] = true
	}
	for r := range states {
		roots = append(roots, r)
	}
	for r := range live {
		if states[r] == nil {
			states[r] = &release{}
			roots = append(roots, r)
		}
	}
	sort.Strings(roots)
	st, err := m.PHP.OpcacheStatus(ctx, roots)
	s.Stats = m.Stats()
	if err != nil {
		s.Error = err.Error()
	} else {
		s.Status = st
	}
	for _, r := range roots {
		if rel := states[r]; rel.discovered && !rel.wasLive && !rel.evicted && !live[r] && exists(r) {
			// Seen only in opcache beside a release, and still on disk:
			// perhaps part of a live one (vendor/ beside public/).
			continue
		}
		rs := ReleaseState{Path: r, Files: states[r].files}
		if st != nil {
			rs.Usage = st.Releases[r]
		}
		switch rel := states[r]; {
		case live[r]:
			rs.State = StateLive
		case rel.evicted:
			rs.State = StateEvicted
		case m.inGrace(rel):
			rs.State = StateWarmed
		default:
			if m.Busy != nil {
				rs.Busy = m.Busy(r)
			}
			rs.State = StateDrained
			if len(rs.Busy) > 0 {
				rs.State = StateDraining
			}
		}
		s.Releases = append(s.Releases, rs)
	}
	return s
}

// rootOfIn is rootOf over a copy of the known releases.
func (m *Manager) rootOfIn(known map[string]*release, dir string) string {
	best := ""
	for r := range known {
		if (dir == r || len(dir) > len(r) && dir[:len(r)+1] == r+"/") && len(r) > len(best) {
			best = r
		}
	}
	if best == "" {
		return dir
	}
	return best
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
