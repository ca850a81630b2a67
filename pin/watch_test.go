package pin

import (
	"bytes"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// startWatcher attaches a started Watcher to r and closes it when the test
// ends.
func startWatcher(t *testing.T, r *Resolver, w *Watcher) *Watcher {
	t.Helper()
	if w == nil {
		w = &Watcher{}
	}
	r.Watcher = w // before the Resolver's first use, as at construction
	require.NoError(t, r.Start())
	t.Cleanup(func() { w.Close() })
	return w
}

// waitFor polls cond until it holds or 5 s pass: inotify events arrive on
// another goroutine.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func resolveOK(t *testing.T, r *Resolver, docroot string) string {
	t.Helper()
	got, err := r.Resolve(docroot)
	require.NoError(t, err)
	return got
}

func TestWatcherSeesFlip(t *testing.T) {
	s := newSite(t)
	r := &Resolver{Every: time.Hour}
	w := startWatcher(t, r, nil)
	require.True(t, w.Watching())

	assert.Equal(t, s.a, resolveOK(t, r, s.current))
	assert.Equal(t, filepath.Join(s.a, "public"), resolveOK(t, r, s.current+"/public"))
	require.EqualValues(t, 2, r.Resolutions())

	flip(t, s.current, filepath.Join("releases", "B"))
	waitFor(t, "both docroots forgotten", func() bool { return r.Len() == 0 })

	assert.Equal(t, s.b, resolveOK(t, r, s.current), "an hour-long Every, and the flip is seen")
	assert.Equal(t, filepath.Join(s.b, "public"), resolveOK(t, r, s.current+"/public"))

	// And back: the watch was renewed by the second resolution.
	flip(t, s.current, filepath.Join("releases", "A"))
	waitFor(t, "forgotten again", func() bool { return r.Len() == 0 })
	assert.Equal(t, s.a, resolveOK(t, r, s.current))
	assert.EqualValues(t, 5, r.Resolutions(), "current/public was not asked for again")
}

// The steady state costs no system call: the resolution count stays flat
// and the file-system hooks are never called, however many requests come
// and however long ago the resolution was made.
func TestWatcherSteadyStateNoSyscalls(t *testing.T) {
	s := newSite(t)
	clk := newClock()
	var calls atomic.Int64
	r := &Resolver{
		Every: time.Second,
		Now:   clk.Now,
		Lstat: func(p string) (fs.FileInfo, error) { calls.Add(1); return os.Lstat(p) },
		Stat:  func(p string) (fs.FileInfo, error) { calls.Add(1); return os.Stat(p) },
		EvalSymlinks: func(p string) (string, error) {
			calls.Add(1)
			return filepath.EvalSymlinks(p)
		},
		Readlink: func(p string) (string, error) { calls.Add(1); return os.Readlink(p) },
	}
	startWatcher(t, r, nil)
	resolveOK(t, r, s.current)
	require.EqualValues(t, 1, r.Resolutions())
	before := calls.Load()
	require.Positive(t, before, "the first resolution and its watch went to the file system")

	const n = 10000
	for i := range n {
		if i%1000 == 0 {
			clk.Advance(time.Hour) // far past Every
		}
		got, err := r.Resolve(s.current)
		if err != nil || got != s.a {
			t.Fatalf("request %d: got %q, %v", i, got, err)
		}
	}
	assert.EqualValues(t, 1, r.Resolutions(), "no resolution after the first")
	assert.Equal(t, before, calls.Load(), "no file-system call after the first resolution")
	assert.EqualValues(t, n, r.Hits())
}

// A link in the middle of a chain (current -> A -> release-12, mod_realdoc's
// UseReadlink layout) and the release directory itself are watched too.
func TestWatcherChainAndRelease(t *testing.T) {
	root, err := filepath.EvalSymlinks(t.TempDir())
	require.NoError(t, err)
	r12 := mkdir(t, filepath.Join(root, "releases", "release-12"))
	r13 := mkdir(t, filepath.Join(root, "releases", "release-13"))
	symlink(t, filepath.Join("releases", "release-12"), filepath.Join(root, "A"))
	current := symlink(t, "A", filepath.Join(root, "current"))

	r := &Resolver{Every: time.Hour}
	startWatcher(t, r, nil)
	assert.Equal(t, r12, resolveOK(t, r, current))

	flip(t, filepath.Join(root, "A"), filepath.Join("releases", "release-13"))
	waitFor(t, "the middle link's change", func() bool { return r.Len() == 0 })
	assert.Equal(t, r13, resolveOK(t, r, current))

	// The release directory removed: the cached answer must not outlive it.
	require.NoError(t, os.Remove(r13))
	waitFor(t, "the release's removal", func() bool { return r.Len() == 0 })
	_, err = r.Resolve(current)
	assert.ErrorIs(t, err, ErrUnresolvable)
}

// A directory above the link renamed away (a site moved) is an event in its
// parent.
func TestWatcherAncestorRenamed(t *testing.T) {
	s := newSite(t)
	r := &Resolver{Every: time.Hour}
	startWatcher(t, r, nil)
	resolveOK(t, r, s.current)
	require.NoError(t, os.Rename(filepath.Join(s.root, "releases"), filepath.Join(s.root, "old")))
	waitFor(t, "the rename", func() bool { return r.Len() == 0 })
	_, err := r.Resolve(s.current)
	assert.ErrorIs(t, err, ErrUnresolvable)
}

// Events about other names in a watched directory change nothing.
func TestWatcherIgnoresOtherNames(t *testing.T) {
	s := newSite(t)
	r := &Resolver{Every: time.Hour}
	w := startWatcher(t, r, nil)
	resolveOK(t, r, s.current)

	require.NoError(t, os.WriteFile(filepath.Join(s.root, "unrelated"), nil, 0o644))
	mkdir(t, filepath.Join(s.root, "releases", "C"))
	// The kernel queues events in order: once the flip's event is handled,
	// the two before it were too.
	flip(t, s.current, filepath.Join("releases", "B"))
	waitFor(t, "the flip", func() bool { return w.Forgets() > 0 })
	assert.GreaterOrEqual(t, w.Events(), uint64(3))
	assert.EqualValues(t, 1, w.Forgets(), "only the flip forgot the docroot")
	assert.Equal(t, s.b, resolveOK(t, r, s.current))
}

// A resolution that a flip overtakes while it runs is not cached for good.
func TestWatcherFlipDuringResolution(t *testing.T) {
	s := newSite(t)
	var once sync.Once
	release := make(chan struct{})
	resolving := make(chan struct{})
	r := &Resolver{Every: time.Hour}
	r.EvalSymlinks = func(p string) (string, error) {
		got, err := filepath.EvalSymlinks(p)
		once.Do(func() { close(resolving); <-release })
		return got, err
	}
	startWatcher(t, r, nil)

	done := make(chan string, 1)
	go func() { got, _ := r.Resolve(s.current); done <- got }()
	<-resolving // resolved to A, not yet cached
	flip(t, s.current, filepath.Join("releases", "B"))
	time.Sleep(50 * time.Millisecond) // let the event be handled; a late one is handled too, after the store
	close(release)
	assert.Equal(t, s.a, <-done, "the request in flight keeps what it resolved")
	waitFor(t, "the stale answer dropped", func() bool { return r.Len() == 0 })
	assert.Equal(t, s.b, resolveOK(t, r, s.current))
}

func TestWatcherNetworkFSFallsBack(t *testing.T) {
	s := newSite(t)
	var log bytes.Buffer
	clk := newClock()
	r := &Resolver{Every: time.Second, Now: clk.Now}
	startWatcher(t, r, &Watcher{
		Logger: slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		FSType: func(dir string) (uint32, error) {
			if strings.HasPrefix(dir, s.root) {
				return 0x6969, nil // NFS
			}
			return statfsType(dir)
		},
	})
	assert.Equal(t, s.a, resolveOK(t, r, s.current))
	resolveOK(t, r, s.current+"/public")
	flip(t, s.current, filepath.Join("releases", "B"))
	assert.Equal(t, s.a, resolveOK(t, r, s.current), "not watched: cached for Every")
	clk.Advance(time.Second)
	assert.Equal(t, s.b, resolveOK(t, r, s.current), "after Every the flip is seen")

	out := log.String()
	assert.Equal(t, 1, strings.Count(out, "level=WARN"), "warned once:\n%s", out)
	assert.Contains(t, out, "network file system (nfs)")
	assert.Contains(t, out, "level=DEBUG", "later fallbacks at debug level")
}

// failingAdd is a notifier whose add fails, as at the inotify watch limit.
type failingAdd struct{ notifier }

func (failingAdd) add(string) (int32, error) {
	return 0, errors.New("inotify_add_watch: no space left on device")
}

func TestWatcherWatchLimitFallsBack(t *testing.T) {
	s := newSite(t)
	clk := newClock()
	r := &Resolver{Every: time.Second, Now: clk.Now}
	var log bytes.Buffer
	w := startWatcher(t, r, &Watcher{Logger: slog.New(slog.NewTextHandler(&log, nil))})
	w.mu.Lock()
	w.ino = failingAdd{w.ino}
	w.mu.Unlock()

	resolveOK(t, r, s.current)
	flip(t, s.current, filepath.Join("releases", "B"))
	assert.Equal(t, s.a, resolveOK(t, r, s.current))
	clk.Advance(time.Second)
	assert.Equal(t, s.b, resolveOK(t, r, s.current))
	assert.Contains(t, log.String(), "no space left on device")
	links := w.Links()
	require.Len(t, links, 1)
	assert.False(t, links[0].Watched)
	assert.Equal(t, s.b, links[0].Target)
}

func TestWatcherDisabled(t *testing.T) {
	s := newSite(t)
	clk := newClock()
	r := &Resolver{Every: time.Second, Now: clk.Now}
	w := startWatcher(t, r, &Watcher{Disabled: true})
	assert.False(t, w.Watching())
	resolveOK(t, r, s.current)
	flip(t, s.current, filepath.Join("releases", "B"))
	assert.Equal(t, s.a, resolveOK(t, r, s.current))
	clk.Advance(time.Second)
	assert.Equal(t, s.b, resolveOK(t, r, s.current))

	links := w.Links()
	require.Len(t, links, 1, "docroots are remembered for Links")
	assert.Equal(t, Link{Docroot: s.current, Target: s.b}, links[0])
}

func TestWatcherLinks(t *testing.T) {
	s := newSite(t)
	r := &Resolver{Every: time.Hour}
	w := startWatcher(t, r, nil)
	resolveOK(t, r, s.current+"/public")
	resolveOK(t, r, s.current)
	_, err := r.Resolve(filepath.Join(s.root, "nope"))
	require.Error(t, err)

	flip(t, s.current, filepath.Join("releases", "B"))
	links := w.Links()
	require.Len(t, links, 2, "a docroot that does not resolve is not remembered")
	assert.Equal(t, s.current, links[0].Docroot)
	assert.Equal(t, s.b, links[0].Target, "where it points now, not what was cached")
	assert.Equal(t, filepath.Join(s.b, "public"), links[1].Target)

	// Broken later: the link is still reported, with the error.
	require.NoError(t, os.Remove(s.current))
	links = w.Links()
	require.Len(t, links, 2)
	assert.ErrorIs(t, links[0].Err, ErrUnresolvable)
	assert.Empty(t, links[0].Target)
}

// A docroot from the configuration is reported before any request, and
// stays when it breaks.
func TestWatcherRemember(t *testing.T) {
	s := newSite(t)
	r := &Resolver{Every: time.Hour}
	w := &Watcher{}
	w.Remember(s.current)
	startWatcher(t, r, w)
	assert.Equal(t, []Link{{Docroot: s.current, Target: s.a}}, w.Links())
	assert.Zero(t, r.Len(), "remembered, not resolved")

	require.NoError(t, os.Remove(s.current))
	_, err := r.Resolve(s.current)
	require.Error(t, err)
	links := w.Links()
	require.Len(t, links, 1, "kept while broken")
	assert.ErrorIs(t, links[0].Err, ErrUnresolvable)

	symlink(t, filepath.Join("releases", "B"), s.current)
	resolveOK(t, r, s.current)
	assert.Equal(t, []Link{{Docroot: s.current, Target: s.b, Watched: true}}, w.Links())
}

// Closing stops watching; what was cached for good is flushed.
func TestWatcherClose(t *testing.T) {
	s := newSite(t)
	clk := newClock()
	r := &Resolver{Every: time.Second, Now: clk.Now}
	w := &Watcher{}
	r.Watcher = w
	require.NoError(t, r.Start())
	resolveOK(t, r, s.current)
	require.NoError(t, w.Close())
	require.NoError(t, w.Close(), "idempotent")
	assert.Zero(t, r.Len())
	assert.False(t, w.Watching())

	resolveOK(t, r, s.current)
	flip(t, s.current, filepath.Join("releases", "B"))
	clk.Advance(time.Second)
	assert.Equal(t, s.b, resolveOK(t, r, s.current), "expires after Every again")
}

func TestWatcherMaxDocroots(t *testing.T) {
	s := newSite(t)
	r := &Resolver{Every: time.Hour}
	w := startWatcher(t, r, &Watcher{MaxDocroots: 2})
	resolveOK(t, r, s.current)
	resolveOK(t, r, s.a)
	require.Equal(t, 2, r.Len())
	resolveOK(t, r, s.b)
	assert.Equal(t, 1, r.Len(), "the full set was dropped, the Resolver flushed")
	assert.Len(t, w.Links(), 1)

	// Only the directories B's resolution looked into are still watched.
	trace, err := r.trace(s.b)
	require.NoError(t, err)
	want := map[string]bool{}
	for _, f := range trace {
		want[f.dir] = true
	}
	w.mu.Lock()
	got := map[string]bool{}
	for _, d := range w.dirs {
		got[d.path] = true
	}
	w.mu.Unlock()
	assert.Equal(t, want, got)
}

func TestWatcherQueueOverflowFlushes(t *testing.T) {
	s := newSite(t)
	r := &Resolver{Every: time.Hour}
	w := startWatcher(t, r, nil)
	resolveOK(t, r, s.current)
	resolveOK(t, r, s.b)
	w.handle([]event{{wd: -1, mask: inQOverflow}})
	assert.Zero(t, r.Len())
	assert.Equal(t, s.a, resolveOK(t, r, s.current))
}

func TestTrace(t *testing.T) {
	root, err := filepath.EvalSymlinks(t.TempDir())
	require.NoError(t, err)
	mkdir(t, filepath.Join(root, "releases", "r1", "public"))
	symlink(t, filepath.Join(root, "releases", "r1"), filepath.Join(root, "A")) // absolute
	symlink(t, "A", filepath.Join(root, "current"))                             // relative
	file := filepath.Join(root, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	symlink(t, "loop", filepath.Join(root, "loop"))

	var r Resolver
	got, err := r.trace(filepath.Join(root, "current", "public"))
	require.NoError(t, err)

	// Every component of root, then the names looked up below it.
	var want []found
	dir := "/"
	for _, c := range strings.Split(strings.TrimPrefix(root, "/"), "/") {
		want = append(want, found{dir, c})
		dir = filepath.Join(dir, c)
	}
	head := append([]found(nil), want...)
	want = append(want, found{root, "current"}, found{root, "A"})
	want = append(want, head...) // A's target is absolute: from / again
	want = append(want,
		found{root, "releases"},
		found{filepath.Join(root, "releases"), "r1"},
		found{filepath.Join(root, "releases", "r1"), "public"},
	)
	assert.Equal(t, want, got)

	_, err = r.trace(filepath.Join(root, "loop"))
	assert.ErrorIs(t, err, syscall.ELOOP)
	_, err = r.trace(filepath.Join(file, "x"))
	assert.ErrorIs(t, err, syscall.ENOTDIR)
	_, err = r.trace(file)
	assert.ErrorIs(t, err, syscall.ENOTDIR, "a docroot that is a file")
	_, err = r.trace(filepath.Join(root, "nope"))
	assert.ErrorIs(t, err, fs.ErrNotExist)
	_, err = r.trace("relative/path")
	assert.Error(t, err)

	// ".." goes up from where the link led, as realpath does.
	got, err = r.trace(root + "/current/../r1")
	require.NoError(t, err)
	assert.Equal(t, found{filepath.Join(root, "releases"), "r1"}, got[len(got)-1])
}

// Issue #10, item 10: a burst of flips while a resolution was being watched
// made every attempt's two traces differ; the docroot was then left
// unwatched, cached for the whole Every (an hour here), and later flips were
// never seen. Now the resolution is forgotten after RetryAfter, the next one
// watches the docroot again, and a later flip is seen at once.
func TestWatcherRetriesAfterBurstOfFlips(t *testing.T) {
	s := newSite(t)
	var burst atomic.Bool
	var calls atomic.Int64
	r := &Resolver{Every: time.Hour}
	r.Readlink = func(p string) (string, error) {
		if burst.Load() && p == s.current {
			// Each trace sees another target, as under flips every few
			// microseconds.
			if calls.Add(1)%2 == 0 {
				return filepath.Join("releases", "B"), nil
			}
			return filepath.Join("releases", "A"), nil
		}
		return os.Readlink(p)
	}
	var log bytes.Buffer
	w := startWatcher(t, r, &Watcher{
		RetryAfter: 20 * time.Millisecond,
		Logger:     slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})

	burst.Store(true)
	assert.Equal(t, s.a, resolveOK(t, r, s.current))
	burst.Store(false)
	require.Positive(t, calls.Load(), "the burst was seen by the traces")
	assert.Contains(t, log.String(), "kept changing")
	assert.NotContains(t, log.String(), "level=WARN", "a passing state, not a failure to watch")

	// The unwatched resolution goes after RetryAfter, not after Every, and
	// the next one is watched again.
	waitFor(t, "the unwatched resolution forgotten", func() bool { return r.Len() == 0 })
	assert.Equal(t, s.a, resolveOK(t, r, s.current))
	cached := r.Cached()
	require.Len(t, cached, 1)
	assert.True(t, cached[0].Watched, "watched again")

	// A flip after the burst is seen at once, by the watch.
	forgets := w.Forgets()
	flip(t, s.current, filepath.Join("releases", "B"))
	waitFor(t, "the flip seen", func() bool { return r.Len() == 0 })
	assert.Equal(t, s.b, resolveOK(t, r, s.current))
	assert.Greater(t, w.Forgets(), forgets)
}

// A Resolver whose Watcher was not started yet resolves as if it had none:
// its resolutions expire after Every, and nothing panics on the Watcher's
// empty maps.
func TestWatcherBeforeStart(t *testing.T) {
	s := newSite(t)
	clk := newClock()
	w := &Watcher{}
	r := &Resolver{Every: time.Second, Now: clk.Now, Watcher: w}
	assert.Equal(t, s.a, resolveOK(t, r, s.current))
	flip(t, s.current, "releases/B")
	clk.Advance(2 * time.Second)
	assert.Equal(t, s.b, resolveOK(t, r, s.current), "expired after Every: not watched")
	assert.Empty(t, w.Links(), "nothing remembered")
}
