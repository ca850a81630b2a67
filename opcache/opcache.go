// Package opcache owns php-fpm's opcache across deploys: it warms a release
// before traffic reaches it, evicts a release's scripts once it has drained,
// and, when the cache has no room left for another release, resets it with
// php-fpm quiesced.
//
// Why it is needed: incpathd pins requests to real release paths, and
// opcache keys scripts by real path, so every release takes its own hash
// slots and memory. A deleted release keeps both. opcache_invalidate()
// marks a script's memory wasted but frees no slot (ext/opcache,
// zend_accel_invalidate); opcache restarts itself only when a script does
// not fit and wasted memory is over opcache.max_wasted_percentage
// (zend_accel_schedule_restart_if_needed), so with small releases and a full
// hash table it never does, and the live release runs uncached for good.
// Only a restart frees slots. opcache_reset() schedules one, and opcache
// carries it out at the start of a request that finds no other request
// running in the master; while requests keep running it waits, and after
// opcache.force_restart_timeout it kills the workers that hold the cache
// (the crash reports of php-src #14471). Run with the gate of package
// quiesce closed, the restart happens at once on incpathd's own next call,
// and no request runs meanwhile.
//
// Everything runs through a PHP interface (fpmcall.Caller); a Manager takes
// one operation at a time.
package opcache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/incpathd/incpathd/fpmcall"
	"github.com/incpathd/incpathd/quiesce"
)

// PHP is what the Manager runs in php-fpm: fpmcall.Caller.
type PHP interface {
	OpcacheStatus(ctx context.Context, roots []string) (*fpmcall.OpcacheStatus, error)
	Warm(ctx context.Context, root string, budget time.Duration) (*fpmcall.WarmResult, error)
	Invalidate(ctx context.Context, root string) (fpmcall.Usage, error)
	Reset(ctx context.Context) error
}

// Errors of the Manager.
var (
	// ErrNotDirectory: the release to warm is not a directory.
	ErrNotDirectory = errors.New("opcache: not a directory")
	// ErrNoRoom: the release does not fit in opcache even after a reset.
	ErrNoRoom = errors.New("opcache: no room for the release")
)

// Manager warms and evicts. Set PHP; the other fields have defaults.
type Manager struct {
	PHP PHP
	// Gate holds requests during a reset. If nil, opcache is never reset:
	// evicted scripts only become wasted memory.
	Gate *quiesce.Gate
	// Live returns the release directories new requests go to now (the
	// targets of the docroot links), real paths.
	Live func() []string
	// Busy returns why a release cannot be evicted yet (requests in
	// flight on it, a docroot that leads to it): the drain condition of
	// incpathd drain. Empty: drained.
	Busy func(release string) []string
	// Logger gets one line per warm, eviction and reset.
	Logger *slog.Logger
	// Interval is how often drained releases are looked for. If zero, 2s.
	Interval time.Duration
	// MaxPause bounds a reset: waiting for requests in flight to finish,
	// the reset, and warming the live releases again, during which new
	// requests are held. If zero, 10s. Requests still in flight after half
	// of it call the reset off until the next eviction.
	MaxPause time.Duration
	// WarmGrace keeps a release that was warmed but is not live yet from
	// being evicted, for this long. If zero, 15 minutes.
	WarmGrace time.Duration

	mu       sync.Mutex // one operation on opcache at a time
	known    map[string]*release
	lastLive map[string]bool
	checks   int
	snap     snapCache
	stats    Stats
	smu      sync.Mutex // guards stats
}

// release is what the Manager remembers of a release directory.
type release struct {
	warmed  time.Time // zero: never warmed by this process
	files   int       // PHP files the last warm found
	wasLive bool
	settled int // polls in a row that found it drained
	evicted bool
	// discovered: seen only in opcache, beside a known release. It is
	// evicted only once gone from disk: an existing directory beside a
	// docroot may be part of the live release (vendor/ beside public/).
	discovered bool
}

// Stats are the Manager's counters and last results.
type Stats struct {
	Warms, WarmFailures     int64
	WarmSeconds             float64 // total
	LastWarm                *WarmReport
	Evictions               int64
	EvictSeconds            float64
	Resets, ResetsCalledOff int64
	ResetPauseSeconds       float64 // total time requests were held
	LastReset               *ResetReport
	Unavailable             string // why opcache cannot be managed, "" if it can
}

// Stats returns a copy of the counters.
func (m *Manager) Stats() Stats {
	m.smu.Lock()
	defer m.smu.Unlock()
	return m.stats
}

func (m *Manager) note(f func(*Stats)) {
	m.smu.Lock()
	f(&m.stats)
	m.smu.Unlock()
}

func (m *Manager) logger() *slog.Logger {
	if m.Logger != nil {
		return m.Logger
	}
	return slog.Default()
}

func (m *Manager) interval() time.Duration { return orDefault(m.Interval, 2*time.Second) }
func (m *Manager) maxPause() time.Duration { return orDefault(m.MaxPause, 10*time.Second) }
func (m *Manager) warmGrace() time.Duration {
	return orDefault(m.WarmGrace, 15*time.Minute)
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func (m *Manager) live() []string {
	if m.Live == nil {
		return nil
	}
	return m.Live()
}

// remember returns the entry of root, made if new. m.mu is held.
func (m *Manager) remember(root string) *release {
	if m.known == nil {
		m.known = map[string]*release{}
	}
	r := m.known[root]
	if r == nil {
		r = &release{}
		m.known[root] = r
	}
	return r
}

// Known returns the releases the Manager knows, sorted: live, warmed,
// drained or seen in opcache.
func (m *Manager) Known() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.knownLocked()
}

func (m *Manager) knownLocked() []string {
	out := make([]string, 0, len(m.known))
	for r := range m.known {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}

// rootOf maps a live directory to the known release it lies in (a docroot
// in public/ of a warmed release), else itself.
func (m *Manager) rootOf(dir string) string {
	best := ""
	for r := range m.known {
		if (dir == r || strings.HasPrefix(dir, r+"/")) && len(r) > len(best) {
			best = r
		}
	}
	if best == "" {
		return dir
	}
	return best
}

// realDir resolves a release directory as opcache will see its scripts.
func realDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrNotDirectory, dir, err)
	}
	if fi, err := os.Stat(real); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("%w: %s", ErrNotDirectory, dir)
	}
	return real, nil
}

// Run looks for drained releases every Interval and evicts them, until ctx
// ends.
func (m *Manager) Run(ctx context.Context) {
	t := time.NewTicker(m.interval())
	defer t.Stop()
	for {
		m.Check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
