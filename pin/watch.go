package pin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/incpathd/incpathd/pathsafe"
)

// Watcher keeps a Resolver's cache right without asking the file system on
// every request: it watches (with Linux inotify) the directories that hold
// every path component and symlink a docroot's resolution went through,
// and calls Resolver.Forget the moment one of those entries is created,
// removed or renamed over. A deploy that flips current -> releases/B with
// rename(2) is an IN_MOVED_TO on current's directory; the next request
// resolves again and gets B. In between, cached requests make no system call
// at all, however long Resolver.Every is.
//
// Where a docroot cannot be watched (no inotify, the watch limit reached, a
// network file system whose changes made on other hosts inotify never
// reports), its resolution expires after Resolver.Every as without a
// Watcher, and the first such case is logged at warn level (later ones at
// debug).
//
// A Watcher also remembers the docroots it was asked about, so that Links
// can report where each points now; with Disabled set it only does that.
//
// Set the fields, give it to the Resolver it serves (Resolver.Watcher),
// call Resolver.Start before the first Resolve, and Close the Watcher when
// done.
type Watcher struct {
	// Logger receives the fallback warning and read errors. If nil,
	// slog.Default().
	Logger *slog.Logger

	// Disabled watches nothing: resolutions expire after Resolver.Every,
	// and the Watcher only remembers docroots for Links.
	Disabled bool

	// MaxDocroots bounds the docroots remembered and watched. When a new
	// one finds the set full, the whole set is dropped and the Resolver
	// flushed, as the Resolver's own cache does. Zero means
	// DefaultMaxEntries; negative means no bound.
	MaxDocroots int

	// RetryAfter is how long a docroot whose links kept changing while it
	// was being watched (a burst of flips during one resolution) keeps its
	// unwatched resolution before it is forgotten, so that the next request
	// resolves it and watches it again. A flip made meanwhile is seen at
	// most RetryAfter late, however long Resolver.Every is. Zero means
	// DefaultRetryAfter.
	RetryAfter time.Duration

	// FSType, if not nil, replaces statfs(2) in tests: it returns the file
	// system magic number of dir (see linux/magic.h).
	FSType func(dir string) (uint32, error)

	r  *Resolver
	mu sync.Mutex
	// ino is the inotify instance; nil when Disabled, failed or closed.
	ino      notifier
	dirs     map[int32]*watchedDir    // by watch descriptor
	docroots map[string]*watchedEntry // remembered docroots
	warned   bool                     // the fallback was logged at warn level
	done     chan struct{}            // closed when readLoop returns

	events, forgets atomic.Uint64
}

// notifier is the part of inotify the Watcher uses; watch_linux.go has the
// real one.
type notifier interface {
	add(dir string) (int32, error)
	remove(wd int32)
	// read calls handle with each batch of events until the notifier is
	// closed (it then returns an error wrapping fs.ErrClosed) or fails.
	read(handle func([]event)) error
	close() error
}

// event is one inotify event.
type event struct {
	wd   int32
	mask uint32
	name string
}

// Event bits the Watcher acts on (linux/inotify.h); the same on every
// architecture.
const (
	inCreate     = 0x100
	inDelete     = 0x200
	inDeleteSelf = 0x400
	inMoveSelf   = 0x800
	inMovedFrom  = 0x40
	inMovedTo    = 0x80
	inUnmount    = 0x2000
	inQOverflow  = 0x4000
	inIgnored    = 0x8000
)

// watchedDir is a watched directory and, for each name in it that some
// resolution looked up, the docroots that depend on that name.
type watchedDir struct {
	path  string
	names map[string]map[string]struct{}
}

// DefaultRetryAfter is Watcher.RetryAfter when it is zero: long enough for
// a burst of flips to end, short next to any Resolver.Every worth caching for.
const DefaultRetryAfter = 100 * time.Millisecond

// watchedEntry is a remembered docroot; deps is nil when it is not watched.
type watchedEntry struct {
	docroot    string // the Watcher's own copy
	deps       []dep
	configured bool        // given to Remember: kept whatever happens
	retry      *time.Timer // pending retry of a docroot that kept changing
}

// dep is a directory entry a resolution depends on: name in directory wd.
type dep struct {
	wd   int32
	name string
}

// start starts watching for r, the Resolver whose Watcher w is (see
// Resolver.Start). If inotify cannot be had, start logs it, leaves the
// Watcher in its fallback (resolutions expire after r.Every) and returns
// the error; the Watcher still works for Links and still needs Close.
func (w *Watcher) start(r *Resolver) error {
	w.mu.Lock()
	w.r = r
	if w.docroots == nil {
		w.docroots = make(map[string]*watchedEntry)
	}
	w.dirs = make(map[int32]*watchedDir)
	w.mu.Unlock()
	if w.Disabled {
		return nil
	}
	ino, err := newNotifier()
	if err != nil {
		w.mu.Lock()
		w.fallback("", err)
		w.mu.Unlock()
		return err
	}
	w.ino = ino
	w.done = make(chan struct{})
	go w.readLoop(ino)
	return nil
}

// Close stops watching and flushes the Resolver, whose watched resolutions
// would otherwise stay cached with nobody to forget them. Later resolutions
// expire after Resolver.Every. Close is idempotent.
func (w *Watcher) Close() error {
	w.mu.Lock()
	ino := w.ino
	w.ino = nil
	clear(w.dirs)
	for _, e := range w.docroots {
		e.deps = nil
		e.stopRetry()
	}
	w.mu.Unlock()
	if ino == nil {
		return nil
	}
	err := ino.close()
	<-w.done
	if w.r != nil {
		w.r.Flush()
	}
	return err
}

// Watching reports whether the Watcher has a working inotify instance.
func (w *Watcher) Watching() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ino != nil
}

// Events returns how many inotify events were read; Forgets how many
// docroots were forgotten because of them.
func (w *Watcher) Events() uint64  { return w.events.Load() }
func (w *Watcher) Forgets() uint64 { return w.forgets.Load() }

// Link is a docroot the Watcher was asked about, and where it points.
type Link struct {
	Docroot string
	// Target is where Docroot resolves on the file system now (Resolver
	// Lookup), or "" with Err set.
	Target string
	Err    error
	// Watched: a change to the docroot's links is seen at once.
	Watched bool
}

// Remember adds docroot to the docroots Links reports, before any request
// names it: a docroot known from the configuration, so that a release it
// leads to shows as in use even while no request has come yet. It is kept
// even if it does not resolve, and is not watched or cached until a
// request resolves it.
func (w *Watcher) Remember(docroot string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.docroots == nil {
		w.docroots = make(map[string]*watchedEntry)
	}
	e := w.docroots[docroot]
	if e == nil {
		e = &watchedEntry{docroot: strings.Clone(docroot)}
		w.docroots[e.docroot] = e
	}
	e.configured = true
}

// Links returns the docroots remembered, sorted, each resolved now.
func (w *Watcher) Links() []Link {
	w.mu.Lock()
	links := make([]Link, 0, len(w.docroots))
	for d, e := range w.docroots {
		links = append(links, Link{Docroot: d, Watched: e.deps != nil})
	}
	w.mu.Unlock()
	slices.SortFunc(links, func(a, b Link) int { return strings.Compare(a.Docroot, b.Docroot) })
	for i := range links {
		links[i].Target, links[i].Err = w.r.Lookup(links[i].Docroot)
	}
	return links
}

func (w *Watcher) logger() *slog.Logger {
	if w.Logger != nil {
		return w.Logger
	}
	return slog.Default()
}

func (w *Watcher) maxDocroots() int {
	if w.MaxDocroots == 0 {
		return DefaultMaxEntries
	}
	return w.MaxDocroots
}

// watch watches what the resolution of docroot goes through and reports
// whether it is watched. Before start, nothing is.
func (w *Watcher) watch(docroot string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dirs == nil {
		return false
	}
	e := w.docroots[docroot]
	if e == nil {
		if limit := w.maxDocroots(); limit > 0 && len(w.docroots) >= limit {
			w.dropAll()
		}
		e = &watchedEntry{docroot: strings.Clone(docroot)}
		w.docroots[e.docroot] = e
	}
	if w.ino == nil {
		w.unregister(docroot, e)
		return false
	}
	ok, err := w.register(docroot, e)
	if err != nil {
		w.unregister(docroot, e)
		if errors.Is(err, errChanging) {
			w.retryLater(e, err)
			return false
		}
		if errors.Is(err, errUnresolvable) {
			// Nothing to watch: the resolution fails too, and is not
			// cached. Not remembered either, so a front end cannot fill
			// the set with docroots that do not exist.
			if !e.configured {
				delete(w.docroots, docroot)
			}
			return false
		}
		w.fallback(docroot, err)
		return false
	}
	return ok
}

// errUnresolvable marks a trace that failed because the docroot does not
// resolve, as opposed to a failure to watch it.
var errUnresolvable = errors.New("pin: docroot does not resolve")

// errChanging marks a docroot whose resolution changed under every attempt
// to watch it: a passing state, unlike the failures that make watching
// impossible, so it is retried (see retryLater) instead of left to Every.
var errChanging = errors.New("pin: the path kept changing while it was being watched")

// retryLater arranges for the unwatched resolution of e, about to be cached
// for Resolver.Every, to be forgotten after RetryAfter, unless a resolution
// has watched it by then. w.mu must be held.
func (w *Watcher) retryLater(e *watchedEntry, err error) {
	w.logger().Debug("docroot links changed while being watched; resolving again shortly",
		"docroot", e.docroot, "retry_after", w.retryAfter(), "err", err)
	if e.retry != nil {
		return // one pending already: it forgets this resolution too
	}
	e.retry = time.AfterFunc(w.retryAfter(), func() { w.retry(e) })
}

// retry is the timer function of retryLater.
func (w *Watcher) retry(e *watchedEntry) {
	w.mu.Lock()
	defer w.mu.Unlock()
	e.retry = nil
	if w.ino == nil || e.deps != nil || w.docroots[e.docroot] != e {
		return // closed, watched since, or dropped (and forgotten) since
	}
	w.forgets.Add(1)
	w.r.Forget(e.docroot)
}

// stopRetry cancels a pending retry. w.mu must be held.
func (e *watchedEntry) stopRetry() {
	if e.retry != nil {
		e.retry.Stop()
		e.retry = nil
	}
}

func (w *Watcher) retryAfter() time.Duration {
	if w.RetryAfter > 0 {
		return w.RetryAfter
	}
	return DefaultRetryAfter
}

// register watches the directory entries docroot's resolution goes
// through. It traces the resolution, watches what it found, and traces
// again: if the second trace differs, a change raced the watches and it
// tries again. w.mu must be held.
func (w *Watcher) register(docroot string, e *watchedEntry) (bool, error) {
	const attempts = 3
	for range attempts {
		found, err := w.r.trace(docroot)
		if err != nil {
			return false, fmt.Errorf("%w: %w", errUnresolvable, err)
		}
		if err := w.checkFS(found); err != nil {
			return false, err
		}
		deps := make([]dep, 0, len(found))
		for _, f := range found {
			wd, err := w.ino.add(f.dir)
			if err != nil {
				w.gcDirs(deps) // drop the watches only this attempt added
				return false, fmt.Errorf("pin: watch %s: %w", f.dir, err)
			}
			d := w.dirs[wd]
			if d == nil {
				d = &watchedDir{names: make(map[string]map[string]struct{})}
				w.dirs[wd] = d
			}
			d.path = f.dir
			deps = append(deps, dep{wd: wd, name: f.name})
		}
		again, err := w.r.trace(docroot)
		if err != nil || !slices.Equal(found, again) {
			w.gcDirs(deps)
			continue
		}
		// Index the new dependencies before dropping the old ones, so a
		// directory both use keeps its watch.
		for _, d := range deps {
			names := w.dirs[d.wd].names
			if names[d.name] == nil {
				names[d.name] = make(map[string]struct{})
			}
			names[d.name][e.docroot] = struct{}{}
		}
		old := e.deps
		e.deps = deps
		w.unindex(docroot, old, deps)
		return true, nil
	}
	return false, fmt.Errorf("pin: watch %s: %w", docroot, errChanging)
}

// unregister stops watching docroot, keeping it remembered. w.mu must be
// held.
func (w *Watcher) unregister(docroot string, e *watchedEntry) {
	old := e.deps
	e.deps = nil
	w.unindex(docroot, old, nil)
}

// unindex removes docroot from the index entries of old that are not in
// keep, and drops watches nothing depends on any more. w.mu must be held.
func (w *Watcher) unindex(docroot string, old, keep []dep) {
	for _, d := range old {
		if slices.Contains(keep, d) {
			continue
		}
		dir := w.dirs[d.wd]
		if dir == nil {
			continue
		}
		if set := dir.names[d.name]; set != nil {
			delete(set, docroot)
			if len(set) == 0 {
				delete(dir.names, d.name)
			}
		}
	}
	w.gcDirs(old)
}

// gcDirs drops the watches among deps that no docroot depends on. w.mu must
// be held.
func (w *Watcher) gcDirs(deps []dep) {
	for _, d := range deps {
		if dir := w.dirs[d.wd]; dir != nil && len(dir.names) == 0 {
			delete(w.dirs, d.wd)
			if w.ino != nil {
				w.ino.remove(d.wd)
			}
		}
	}
}

// dropAll forgets every remembered docroot, in the Resolver too. w.mu must
// be held.
func (w *Watcher) dropAll() {
	for d, e := range w.docroots {
		w.unregister(d, e)
		w.r.Forget(d)
		if !e.configured {
			delete(w.docroots, d)
		}
	}
}

// fallback logs that docroot (or, if "", every docroot) cannot be watched:
// at warn level the first time, at debug level afterwards. w.mu must be
// held.
func (w *Watcher) fallback(docroot string, err error) {
	level := slog.LevelDebug
	if !w.warned {
		w.warned = true
		level = slog.LevelWarn
	}
	attrs := []any{"err", err, "realpath_every", w.r.Every}
	if docroot != "" {
		attrs = append([]any{"docroot", docroot}, attrs...)
	}
	w.logger().Log(context.Background(), level, "cannot watch docroot symlinks for changes; a flip is seen once realpath-every has passed", attrs...)
}

// Network file systems: changes made on another host reach this one's
// cache, but never its inotify (magic numbers from linux/magic.h and the
// file systems' sources).
var remoteFS = map[uint32]string{
	0x6969:     "nfs",
	0x517b:     "smb",
	0xff534d42: "cifs",
	0xfe534d42: "smb2",
	0x65735546: "fuse",
	0x00c36400: "ceph",
	0x01021997: "9p",
	0x5346414f: "afs",
	0x6b414653: "afs",
	0x73757245: "coda",
	0x01161970: "gfs2",
	0x7461636f: "ocfs2",
	0x0bd00bd0: "lustre",
	0x47504653: "gpfs",
}

// checkFS refuses to watch directories on a network file system.
func (w *Watcher) checkFS(entries []found) error {
	seen := ""
	for _, f := range entries {
		if f.dir == seen {
			continue
		}
		seen = f.dir
		typ, err := w.fsType(f.dir)
		if err != nil {
			return fmt.Errorf("pin: statfs %s: %w", f.dir, err)
		}
		if name, ok := remoteFS[typ]; ok {
			return fmt.Errorf("pin: %s is on a network file system (%s); inotify does not see changes made on other hosts", f.dir, name)
		}
	}
	return nil
}

func (w *Watcher) fsType(dir string) (uint32, error) {
	if w.FSType != nil {
		return w.FSType(dir)
	}
	return statfsType(dir)
}

// readLoop is the goroutine that reads inotify events until Close.
func (w *Watcher) readLoop(ino notifier) {
	defer close(w.done)
	err := ino.read(w.handle)
	if err == nil || errors.Is(err, fs.ErrClosed) {
		return
	}
	// Unexpected: watching stopped, so nothing may stay cached for good.
	w.mu.Lock()
	if w.ino == ino {
		w.ino = nil
		clear(w.dirs)
		for _, e := range w.docroots {
			e.deps = nil
		}
		w.warned = false
		w.fallback("", fmt.Errorf("pin: reading inotify events: %w", err))
	}
	w.mu.Unlock()
	ino.close()
	w.r.Flush()
}

// handle acts on a batch of events: every docroot that depends on a
// changed entry is forgotten by the Resolver (and unwatched until its next
// resolution watches it again).
func (w *Watcher) handle(evs []event) {
	w.events.Add(uint64(len(evs)))
	w.mu.Lock()
	defer w.mu.Unlock()
	var forget []string
	flush := false
	for _, ev := range evs {
		switch {
		case ev.mask&inQOverflow != 0:
			// Events were lost: anything may have changed.
			flush = true
			for d, e := range w.docroots {
				w.unregister(d, e)
			}
		case ev.mask&(inIgnored|inDeleteSelf|inMoveSelf|inUnmount) != 0:
			// The directory itself went away or moved: everything that
			// looked into it is suspect.
			if dir := w.dirs[ev.wd]; dir != nil {
				for _, set := range dir.names {
					for d := range set {
						forget = append(forget, d)
					}
				}
			}
			if ev.mask&inIgnored != 0 {
				delete(w.dirs, ev.wd) // the kernel dropped the watch itself
			}
		case ev.mask&(inCreate|inDelete|inMovedFrom|inMovedTo) != 0:
			if dir := w.dirs[ev.wd]; dir != nil {
				for d := range dir.names[ev.name] {
					forget = append(forget, d)
				}
			}
		}
	}
	if flush {
		w.forgets.Add(uint64(len(w.docroots)))
		w.r.Flush()
		return
	}
	for _, d := range forget {
		if e := w.docroots[d]; e != nil && e.deps != nil {
			w.unregister(d, e)
		}
		w.forgets.Add(1)
		w.r.Forget(d)
	}
}

// found is a directory entry a resolution looked up: name in dir, a real
// directory path (no symlinks in it).
type found struct {
	dir, name string
}

// trace follows docroot through the file system one component at a time,
// as realpath(3) does, and returns every directory entry it looked up,
// symlinks and their targets' components included. Those are the entries
// whose change can change the resolution: with UseReadlink, which follows
// fewer links, a superset. It uses the Resolver's Lstat and Readlink hooks.
func (r *Resolver) trace(docroot string) ([]found, error) {
	if err := checkPath(docroot); err != nil {
		return nil, err
	}
	var out []found
	w := pathsafe.Walker{
		Visit: func(dir, name, _ string) error {
			out = append(out, found{dir: dir, name: name})
			return nil
		},
		Lstat:    r.lstat,
		Readlink: r.readlink,
	}
	p, fi, err := w.Walk(docroot)
	if err != nil {
		return nil, err
	}
	if fi != nil && !fi.IsDir() {
		return nil, fmt.Errorf("%s: %w", p, syscall.ENOTDIR)
	}
	return out, nil
}
