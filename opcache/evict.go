package opcache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/incpathd/incpathd/fpmcall"
)

// settlePolls is how many checks in a row must find a release drained
// before it is evicted, as incpathd drain confirms it on two polls.
const settlePolls = 2

// recheckEvery is how many checks pass between looks at opcache when
// nothing changed: they find releases incpathd does not know (from before
// a restart) and notice php-fpm gaining opcache.
const recheckEvery = 15

// Check evicts the releases that have drained since the last Check: one
// step of Run.
func (m *Manager) Check(ctx context.Context) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.checks++
	live := map[string]bool{}
	for _, l := range m.live() {
		root := m.rootOf(l)
		live[root] = true
		r := m.remember(root)
		r.wasLive, r.settled, r.evicted = true, 0, false
	}
	changed := !sameKeys(live, m.lastLive)
	m.lastLive = live
	if (changed || m.checks%recheckEvery == 1) && len(live)+len(m.known) > 0 {
		if !m.discover(ctx) {
			return
		}
	}
	var evicted []string
	for root, r := range m.known {
		if live[root] || m.inGrace(r) {
			continue
		}
		if r.evicted {
			// Kept until a reset: opcache lists invalidated scripts
			// until it restarts, and a forgotten release would be found
			// there and evicted again.
			continue
		}
		if r.discovered && !r.wasLive {
			if _, err := os.Stat(root); !errors.Is(err, os.ErrNotExist) {
				continue
			}
		}
		if m.Busy != nil && len(m.Busy(root)) > 0 {
			r.settled = 0
			continue
		}
		if r.settled++; r.settled < settlePolls {
			continue
		}
		if err := m.evict(ctx, root); err != nil {
			m.logger().Warn("opcache eviction failed", "release", root, "err", err)
			continue
		}
		r.evicted = true
		evicted = append(evicted, root)
	}
	if len(evicted) > 0 {
		m.resetIfFull(ctx, live)
	}
}

// inGrace: warmed, never live yet, and recently: about to be activated.
func (m *Manager) inGrace(r *release) bool {
	return !r.warmed.IsZero() && !r.wasLive && time.Since(r.warmed) < m.warmGrace()
}

// discover asks opcache which releases it holds scripts of and remembers
// them, so that releases cached before this process started are evicted
// too. It reports whether opcache can be managed.
func (m *Manager) discover(ctx context.Context) bool {
	st, err := m.PHP.OpcacheStatus(ctx, m.knownLocked())
	m.unavailable(err)
	if err != nil {
		return false
	}
	for root, u := range st.Releases {
		if root != "" && u.Scripts > 0 && m.known[root] == nil {
			m.remember(root).discovered = true
		}
	}
	return true
}

// evict invalidates root's scripts.
func (m *Manager) evict(ctx context.Context, root string) error {
	start := time.Now()
	u, err := m.PHP.Invalidate(ctx, root)
	if err != nil {
		return err
	}
	d := time.Since(start)
	m.note(func(s *Stats) {
		s.Evictions++
		s.EvictSeconds += d.Seconds()
	})
	m.logger().Info("opcache eviction: a drained release's scripts invalidated", "release", root,
		"scripts", u.Scripts, "bytes", u.Bytes, "seconds", d.Seconds())
	return nil
}

// resetIfFull resets opcache when it has no room for another release the
// size of the live ones: fewer free hash slots than their scripts, or
// less free memory than they take. Invalidated scripts keep their slots
// until a restart, and opcache restarts by itself only under memory
// pressure with enough waste, in the middle of traffic.
func (m *Manager) resetIfFull(ctx context.Context, live map[string]bool) {
	roots := make([]string, 0, len(live))
	for r := range live {
		roots = append(roots, r)
	}
	st, err := m.PHP.OpcacheStatus(ctx, roots)
	if err != nil {
		m.logger().Warn("opcache: cannot read its status after an eviction", "err", err)
		return
	}
	why := full(st, roots)
	if why == "" {
		return
	}
	if m.Gate == nil {
		m.logger().Warn("opcache is full but cannot be reset safely without the gate", "why", why)
		return
	}
	m.reset(ctx, why)
}

// full says why st has no room for another release like roots, "" if it
// has.
func full(st *fpmcall.OpcacheStatus, roots []string) string {
	var need fpmcall.Usage
	for _, r := range roots {
		u := st.Releases[r]
		need.Scripts += u.Scripts
		need.Bytes += u.Bytes
	}
	switch {
	case st.CacheFull:
		return "opcache reports cache_full"
	case st.MaxKeys-st.Keys < max(need.Scripts, 1):
		return fmt.Sprintf("%d free hash slots of %d, the live releases hold %d scripts", st.MaxKeys-st.Keys, st.MaxKeys, need.Scripts)
	case st.FreeMemory < need.Bytes:
		return fmt.Sprintf("%d bytes free, the live releases take %d", st.FreeMemory, need.Bytes)
	}
	return ""
}

func sameKeys(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}
