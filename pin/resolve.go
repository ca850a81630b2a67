package pin

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/incpathd/incpathd/pathsafe"
)

// Errors returned by Resolver.Resolve, always wrapped with the docroot and
// the cause. Test with errors.Is.
var (
	// ErrUnresolvable: the docroot is missing, a dangling link, a link
	// loop, not a directory, or not an absolute, NUL-free path.
	ErrUnresolvable = errors.New("pin: docroot unresolvable")
	// ErrOutsideRoot: the docroot resolved to a directory outside
	// Resolver.AllowRoots.
	ErrOutsideRoot = errors.New("pin: docroot outside allowed roots")
)

// errResolvePanicked is what the requests waiting on a resolution get when
// the resolution panicked (only a test hook can), instead of waiting forever.
var errResolvePanicked = errors.New("pin: resolution panicked")

const (
	// DefaultMaxEntries is the cache bound when Resolver.MaxEntries is zero.
	DefaultMaxEntries = 1024

	// maxPathLen is Linux's PATH_MAX. Longer docroots cannot be resolved by
	// the kernel anyway; refusing them before any system call also bounds
	// the memory a hostile front end can pin in the cache.
	maxPathLen = 4096
)

// Resolver resolves docroots to the release directory they point at, with a
// cache, as mod_realdoc does for Apache.
//
// Unlike mod_realdoc, the cache is keyed by the docroot string itself (not
// ServerName:port, which made two vhosts with one name share a docroot,
// mod_realdoc issue #6), is shared by all goroutines (mod_realdoc kept one per
// process and raced under threaded MPMs, issue #4), and lets only one
// resolution per docroot run at a time; the requests that arrive meanwhile
// wait for its result instead of resolving again.
//
// Failed resolutions are not cached: a docroot that is missing for a moment
// during a deploy must work again on the next request, not after Every. The
// cost is one resolution per request (at most one at a time per docroot) for
// as long as the docroot stays broken, which is what nginx's $realpath_root
// pays on every request anyway. Unlike mod_realdoc, which served the
// unresolved path when realpath() failed, Resolve reports the failure and
// leaves the choice to the caller.
//
// The zero Resolver resolves with a full realpath on every call. Set the
// fields before the first call to Resolve and do not change them afterwards.
// A Resolver must not be copied after first use.
type Resolver struct {
	// Every is how long a resolution stays cached (mod_realdoc's
	// RealpathEvery, there in seconds). A request that comes Every or more
	// after the resolution began resolves again, so a flipped symlink
	// is seen at most Every after the flip. Zero or negative: resolve on
	// every call, with no cache and no sharing between concurrent calls, as
	// nginx's $realpath_root does.
	Every time.Duration

	// UseReadlink replaces the full realpath with mod_realdoc's UseReadlink:
	// only the first symlink found at or below ReadlinkPrefix is read, and
	// the rest of the path is appended to its target. With
	// current -> A -> release-12, the docroot stays under A, so flipping
	// current between two stable names A and B lets opcache reuse its
	// entries across releases.
	//
	// Unlike mod_realdoc, the last component is examined too, so a
	// DOCUMENT_ROOT of /srv/current works when current is the symlink. A
	// relative link target is joined to the link's directory and cleaned.
	// Because links are not all followed, a docroot with a ".." component is
	// refused: it would mean different directories lexically and physically.
	UseReadlink bool

	// ReadlinkPrefix is where UseReadlink starts looking for the symlink:
	// the prefix itself and the components below it are examined, the ones
	// above are not (a link such as /var/www -> /data/www above the prefix
	// is then left alone). "" means "/". As in mod_realdoc, a docroot that is
	// not at or below the prefix is examined from "/".
	ReadlinkPrefix string

	// AllowRoots, when not empty, confines resolved docroots: each must be
	// one of these directories or below one (by whole components, so
	// /srv/www2 is not below /srv/www), or Resolve fails with
	// ErrOutsideRoot. This keeps a misconfigured or hostile front end from
	// pinning PHP to any directory it names. The roots must be absolute;
	// they are compared with the resolved path as written, after
	// filepath.Clean, without touching the file system: with a full realpath
	// they must be free of symlinks themselves; with UseReadlink, links
	// below the first one are not followed before the check.
	AllowRoots []string

	// MaxEntries bounds the cache. Docroots come from the web server's
	// configuration and are few; a front end that sends many different ones
	// (misconfigured, or hostile) would otherwise grow the cache without
	// end. When a new docroot finds the cache full, the whole cache is
	// dropped: the legitimate docroots cost one resolution each to come
	// back, and the worst case is one resolution per request, no worse than
	// no cache. Zero means DefaultMaxEntries; negative means no bound.
	MaxEntries int

	// Watcher, if not nil, is asked before each resolution that Resolve
	// will cache to watch the file system entries that the resolution of
	// the docroot goes through. When they are watched, any change to them
	// leads to Forget(docroot) (or Flush), so the resolution stays cached
	// until then instead of for Every, and requests in the steady state
	// make no system call at all. A docroot that cannot be watched expires
	// after Every. The watch is set before the resolution so that a change
	// made while it runs is either seen by the resolution or reported.
	// Start starts it; until then nothing is watched.
	Watcher *Watcher

	// Hooks for tests: each nil field means the real function.
	Now          func() time.Time                  // time.Now
	EvalSymlinks func(string) (string, error)      // filepath.EvalSymlinks: the realpath
	Lstat        func(string) (fs.FileInfo, error) // os.Lstat
	Readlink     func(string) (string, error)      // os.Readlink
	Stat         func(string) (fs.FileInfo, error) // os.Stat: the final is-a-directory check

	// mu serialises every write to the cache and inflight, so that cache
	// and entries agree; reads of cache take no lock.
	mu       sync.Mutex
	cache    sync.Map         // string docroot -> *entry; lock-free Load, no allocation
	entries  int              // keys in cache
	inflight map[string]*call // resolutions under way, by docroot

	resolutions atomic.Uint64
	misses      atomic.Uint64
	lookups     atomic.Uint64

	// hits is written by every cache hit, from every core: keep it off the
	// cache lines that hits only read (the fields above), or each increment
	// would evict them from the other cores' caches.
	_    [128]byte
	hits atomic.Uint64
	_    [120]byte
}

// entry is a successful resolution. Entries are immutable: a refresh stores
// a new one, so a reader holding the old one needs no lock.
type entry struct {
	resolved string
	expires  int64 // in ticks
	watched  bool  // kept until Forget: expires is math.MaxInt64
	safe     bool  // the docroot has no NUL byte and no ".." component
}

// call is one resolution under way. The waiters read resolved and err after
// done is closed.
type call struct {
	done     chan struct{}
	resolved string
	err      error
	// forgotten is set, under Resolver.mu, by Forget and Flush: the result
	// predates them, so it must not be cached.
	forgotten bool
	watched   bool // Watch took the docroot on
}

// Start starts the Resolver's Watcher, if it has one, before the first
// Resolve; see Watcher.start. Close the Watcher when done.
func (r *Resolver) Start() error {
	if r.Watcher == nil {
		return nil
	}
	return r.Watcher.start(r)
}

// Resolve returns the directory that docroot resolves to: its realpath, or
// with UseReadlink the target of its first symlink. The result is clean,
// absolute, and was a directory when resolved.
//
// A cache hit takes no lock, no system call and no allocation. The returned
// string is owned by the Resolver and never modified; docroot may be a
// transient string (the Resolver copies it before keeping it).
//
// Errors wrap ErrUnresolvable or ErrOutsideRoot, and the underlying cause
// (such as fs.ErrNotExist) where there is one.
//
// Resolve has no timeout: if the file system hangs (a stuck network mount),
// the requests for that docroot wait with the resolution, as PHP itself
// would wait on its first include.
func (r *Resolver) Resolve(docroot string) (string, error) {
	if r.Every <= 0 {
		r.misses.Add(1)
		return r.resolve(docroot)
	}
	e, now := r.lookup(docroot)
	if e == nil {
		return r.fill(docroot, now)
	}
	return e.resolved, nil
}

// cachedSafe returns the cached resolution of docroot if there is one and
// docroot is safe to pass to a system call (pathsafe.Unsafe, checked when
// it was resolved), counted as a hit. ok is false on a miss: Resolve then
// answers.
func (r *Resolver) cachedSafe(docroot string) (resolved string, ok bool) {
	if r.Every <= 0 {
		return "", false
	}
	if e, _ := r.lookup(docroot); e != nil && e.safe {
		return e.resolved, true
	}
	return "", false
}

// lookup returns the cache's entry for docroot, counted as a hit, or nil
// and the time to resolve it from.
func (r *Resolver) lookup(docroot string) (*entry, int64) {
	v, ok := r.cache.Load(docroot)
	if !ok {
		return nil, r.ticks()
	}
	// A watched entry never expires: no need to read the clock.
	e := v.(*entry)
	if e.watched {
		r.hits.Add(1)
		return e, 0
	}
	now := r.ticks()
	if now < e.expires {
		r.hits.Add(1)
		return e, 0
	}
	return nil, now
}

// fill resolves docroot after a cache miss, or waits for the resolution
// another goroutine has under way.
func (r *Resolver) fill(docroot string, now int64) (string, error) {
	r.mu.Lock()
	// Another goroutine may have stored a fresh entry since the Load.
	if v, ok := r.cache.Load(docroot); ok {
		if e := v.(*entry); now < e.expires {
			r.mu.Unlock()
			r.hits.Add(1)
			return e.resolved, nil
		}
	}
	r.misses.Add(1)
	if c, ok := r.inflight[docroot]; ok {
		r.mu.Unlock()
		<-c.done
		return c.resolved, c.err
	}
	key := strings.Clone(docroot)
	c := &call{done: make(chan struct{})}
	if r.inflight == nil {
		r.inflight = make(map[string]*call)
	}
	r.inflight[key] = c
	r.mu.Unlock()

	r.lead(key, c, now)
	return c.resolved, c.err
}

// lead runs the resolution of call c for docroot key, caches a success, and
// releases the waiters, even if the resolution panics.
func (r *Resolver) lead(key string, c *call, start int64) {
	defer func() {
		r.mu.Lock()
		if r.inflight[key] == c {
			delete(r.inflight, key)
		}
		if c.err == nil && !c.forgotten {
			// Valid from the start: the result shows the file system
			// as it was then, or later.
			expires := start + int64(r.Every)
			if expires < start || c.watched {
				expires = math.MaxInt64 // a huge Every, or watched: cached until Forget
			}
			r.store(key, &entry{resolved: c.resolved, expires: expires, watched: c.watched, safe: pathsafe.Unsafe(key) == ""})
		}
		r.mu.Unlock()
		close(c.done)
	}()
	c.err = errResolvePanicked // replaced unless resolve panics
	watched := r.Watcher != nil && r.Watcher.watch(key)
	c.resolved, c.err = r.resolve(key)
	c.watched = watched
}

// store adds e under key, first dropping the whole cache if it is full.
// r.mu must be held.
func (r *Resolver) store(key string, e *entry) {
	if _, ok := r.cache.Load(key); !ok {
		if limit := r.maxEntries(); limit > 0 && r.entries >= limit {
			r.cache.Clear()
			r.entries = 0
		}
		r.entries++
	}
	r.cache.Store(key, e)
}

func (r *Resolver) maxEntries() int {
	if r.MaxEntries == 0 {
		return DefaultMaxEntries
	}
	return r.MaxEntries
}

// Forget drops the cached resolution of docroot, so the next Resolve of it
// resolves again. A resolution of docroot under way is not cached when it
// ends, and later calls do not wait for it. Meant for a watcher that sees a
// symlink change before Every runs out.
func (r *Resolver) Forget(docroot string) {
	r.mu.Lock()
	if _, ok := r.cache.LoadAndDelete(docroot); ok {
		r.entries--
	}
	if c, ok := r.inflight[docroot]; ok {
		c.forgotten = true
		delete(r.inflight, docroot)
	}
	r.mu.Unlock()
}

// Flush drops every cached resolution, as Forget does for one docroot.
func (r *Resolver) Flush() {
	r.mu.Lock()
	r.cache.Clear()
	r.entries = 0
	for k, c := range r.inflight {
		c.forgotten = true
		delete(r.inflight, k)
	}
	r.mu.Unlock()
}

// Stale reports whether the cache no longer answers resolved for docroot:
// a Forget, a Flush or the end of Every dropped or replaced the resolution
// that Resolve returned. A caller that must not use a release that was
// already replaced (because something may delete it once it looks unused)
// first makes its use visible, then checks Stale: a Forget then happens
// either before the check, which sees it, or after the use was visible to
// whoever checks for users. Without a cache (Every zero or negative) it
// reports false: there is nothing to compare with. It takes no lock and no
// system call.
func (r *Resolver) Stale(docroot, resolved string) bool {
	if r.Every <= 0 {
		return false
	}
	v, ok := r.cache.Load(docroot)
	if !ok {
		return true
	}
	e := v.(*entry)
	return e.resolved != resolved || !e.watched && r.ticks() >= e.expires
}

// Entry is a resolution in the cache.
type Entry struct {
	Docroot, Resolved string
	// Watched: the resolution is kept until its docroot changes; otherwise
	// it expires after Every.
	Watched bool
}

// Cached returns the resolutions that Resolve would answer from the cache
// now, expired ones left out, in no particular order. These are the
// releases that new requests are pinned to until the cache learns of a
// change.
func (r *Resolver) Cached() []Entry {
	now := r.ticks()
	var out []Entry
	r.cache.Range(func(k, v any) bool {
		if e := v.(*entry); now < e.expires {
			out = append(out, Entry{Docroot: k.(string), Resolved: e.resolved, Watched: e.watched})
		}
		return true
	})
	return out
}

// Lookup resolves docroot on the file system now, as Resolve would without
// a cache, and leaves the cache and Resolutions alone: it is for reports
// (what does the link point at right now), not for requests.
func (r *Resolver) Lookup(docroot string) (string, error) {
	r.lookups.Add(1)
	return r.resolveFS(docroot)
}

// Resolutions returns how many times Resolve went to the file system,
// failed attempts included (Lookup is not counted). When it stops growing
// while requests flow, the requests cost no path system calls.
func (r *Resolver) Resolutions() uint64 { return r.resolutions.Load() }

// Hits returns how many Resolve calls were answered from the cache.
func (r *Resolver) Hits() uint64 { return r.hits.Load() }

// Misses returns how many Resolve calls were not answered from the cache:
// they resolved, or waited for a resolution under way. With Every zero,
// every call is a miss.
func (r *Resolver) Misses() uint64 { return r.misses.Load() }

// Len returns the number of cached resolutions, expired ones included.
func (r *Resolver) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.entries
}

// resolve resolves docroot on the file system, without the cache, and
// counts it.
func (r *Resolver) resolve(docroot string) (string, error) {
	r.resolutions.Add(1)
	return r.resolveFS(docroot)
}

// resolveFS resolves docroot on the file system.
func (r *Resolver) resolveFS(docroot string) (string, error) {
	if err := checkPath(docroot); err != nil {
		return "", unresolvable(docroot, err)
	}
	var (
		resolved string
		err      error
	)
	if r.UseReadlink {
		resolved, err = r.firstLink(docroot)
	} else {
		resolved, err = r.evalSymlinks(docroot)
	}
	if err != nil {
		return "", unresolvable(docroot, err)
	}
	// The realpath has no links left, but UseReadlink's result may, and
	// the final component must be a directory either way.
	fi, err := r.stat(resolved)
	if err != nil {
		return "", unresolvable(docroot, err)
	}
	if !fi.IsDir() {
		return "", unresolvable(docroot, fmt.Errorf("%s is not a directory", resolved))
	}
	if !r.allowed(resolved) {
		return "", fmt.Errorf("pin: resolve %q: resolved to %q: %w", docroot, resolved, ErrOutsideRoot)
	}
	return resolved, nil
}

func unresolvable(docroot string, cause error) error {
	return fmt.Errorf("pin: resolve %q: %w: %w", docroot, cause, ErrUnresolvable)
}

// checkPath refuses what the kernel would misread or refuse: a NUL byte
// ends a C string early, so "/srv/www\x00/../etc" must not reach a system
// call; a relative docroot would depend on incpathd's working directory.
func checkPath(p string) error {
	switch {
	case p == "":
		return errors.New("empty path")
	case len(p) > maxPathLen:
		return fmt.Errorf("path longer than %d bytes", maxPathLen)
	case strings.IndexByte(p, 0) >= 0:
		return errors.New("path contains a NUL byte")
	case p[0] != '/':
		return errors.New("path is not absolute")
	}
	return nil
}

// firstLink is mod_realdoc's first_link(): it lstats each component at or
// below the prefix, the last one included, and replaces the path up to the
// first symlink with the link's target.
func (r *Resolver) firstLink(docroot string) (string, error) {
	if pathsafe.HasDotDot(docroot) {
		return "", errors.New(`path has a ".." component`)
	}
	prefix := "/"
	if r.ReadlinkPrefix != "" {
		prefix = filepath.Clean(r.ReadlinkPrefix)
		if prefix[0] != '/' {
			return "", fmt.Errorf("readlink prefix %q is not absolute", r.ReadlinkPrefix)
		}
	}
	p := filepath.Clean(docroot)
	start := 1 // the end of the first component to examine
	if prefix != "/" && pathsafe.Within(p, prefix) {
		start = len(prefix)
	}
	for i := start; i <= len(p); i++ {
		if i < len(p) && p[i] != '/' {
			continue
		}
		dir := p[:i]
		fi, err := r.lstat(dir)
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			continue
		}
		target, err := r.readlink(dir)
		if err != nil {
			return "", err
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(dir), target)
		}
		return filepath.Clean(target + p[i:]), nil
	}
	return p, nil
}

// Allowed reports whether the absolute path p, cleaned lexically, is at or
// below one of AllowRoots, or AllowRoots is empty. It touches no file: for
// paths that need no resolution, such as a docroot a trusted front end
// resolved, or a script path pinned below a resolved docroot.
func (r *Resolver) Allowed(p string) bool {
	if len(r.AllowRoots) == 0 {
		return true
	}
	return r.allowed(filepath.Clean(p))
}

// allowed reports whether resolved is within one of r.AllowRoots.
func (r *Resolver) allowed(resolved string) bool {
	if len(r.AllowRoots) == 0 {
		return true
	}
	for _, root := range r.AllowRoots {
		if root == "" {
			continue
		}
		if pathsafe.Within(resolved, filepath.Clean(root)) {
			return true
		}
	}
	return false
}

// epoch is the origin of the real clock's ticks.
var epoch = time.Now()

// ticks returns the time in nanoseconds from an arbitrary origin. The real
// clock reads only the monotonic clock (time.Since of a time with a
// monotonic reading), half the cost of time.Now, and immune to wall-clock
// steps.
func (r *Resolver) ticks() int64 {
	if r.Now != nil {
		return r.Now().UnixNano()
	}
	return int64(time.Since(epoch))
}

func (r *Resolver) evalSymlinks(p string) (string, error) {
	if r.EvalSymlinks != nil {
		return r.EvalSymlinks(p)
	}
	return filepath.EvalSymlinks(p)
}

func (r *Resolver) lstat(p string) (fs.FileInfo, error) {
	if r.Lstat != nil {
		return r.Lstat(p)
	}
	return os.Lstat(p)
}

func (r *Resolver) readlink(p string) (string, error) {
	if r.Readlink != nil {
		return r.Readlink(p)
	}
	return os.Readlink(p)
}

func (r *Resolver) stat(p string) (fs.FileInfo, error) {
	if r.Stat != nil {
		return r.Stat(p)
	}
	return os.Stat(p)
}
