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
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// site is a deployed site in a temporary directory:
//
//	root/releases/A/public, root/releases/B/public
//	root/current -> releases/A
type site struct {
	root    string
	current string
	a, b    string
}

func newSite(t testing.TB) *site {
	t.Helper()
	// The temporary directory may itself sit below a symlink; start from
	// its real path so that expected results are exact.
	root, err := filepath.EvalSymlinks(t.TempDir())
	require.NoError(t, err)
	s := &site{
		root:    root,
		current: filepath.Join(root, "current"),
		a:       filepath.Join(root, "releases", "A"),
		b:       filepath.Join(root, "releases", "B"),
	}
	require.NoError(t, os.MkdirAll(filepath.Join(s.a, "public"), 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(s.b, "public"), 0o755))
	require.NoError(t, os.Symlink(filepath.Join("releases", "A"), s.current))
	return s
}

// flip points link at target atomically, as deploy tools do: a new link
// under a temporary name, renamed over the old one.
func flip(t testing.TB, link, target string) {
	t.Helper()
	tmp := link + ".tmp"
	require.NoError(t, os.Symlink(target, tmp))
	require.NoError(t, os.Rename(tmp, link))
}

func mkdir(t testing.TB, dir string) string {
	t.Helper()
	require.NoError(t, os.MkdirAll(dir, 0o755))
	return dir
}

func symlink(t testing.TB, target, link string) string {
	t.Helper()
	require.NoError(t, os.Symlink(target, link))
	return link
}

// clock is a Now hook that moves only when told to.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func TestResolveRealpath(t *testing.T) {
	s := newSite(t)
	var r Resolver

	got, err := r.Resolve(s.current)
	require.NoError(t, err)
	assert.Equal(t, s.a, got)

	got, err = r.Resolve(s.current + "/public/")
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(s.a, "public"), got)

	// ".." is resolved physically, from the link's target.
	got, err = r.Resolve(s.current + "/../B")
	require.NoError(t, err)
	assert.Equal(t, s.b, got)

	// A docroot without links resolves to itself.
	got, err = r.Resolve(s.b)
	require.NoError(t, err)
	assert.Equal(t, s.b, got)
}

func TestResolveFlipAfterEvery(t *testing.T) {
	s := newSite(t)
	clk := newClock()
	r := Resolver{Every: 2 * time.Second, Now: clk.Now}

	got, err := r.Resolve(s.current)
	require.NoError(t, err)
	assert.Equal(t, s.a, got)

	flip(t, s.current, filepath.Join("releases", "B"))

	clk.Advance(time.Second)
	got, err = r.Resolve(s.current)
	require.NoError(t, err)
	assert.Equal(t, s.a, got, "within Every the cached release is served")

	clk.Advance(time.Second)
	got, err = r.Resolve(s.current)
	require.NoError(t, err)
	assert.Equal(t, s.b, got, "after Every the flip is seen")

	assert.EqualValues(t, 2, r.Resolutions())
	assert.EqualValues(t, 1, r.Hits())
	assert.EqualValues(t, 2, r.Misses())
}

func TestResolveEveryZero(t *testing.T) {
	s := newSite(t)
	var r Resolver

	for i := range 3 {
		got, err := r.Resolve(s.current)
		require.NoError(t, err)
		assert.Equal(t, s.a, got)
		assert.EqualValues(t, i+1, r.Resolutions())
	}
	flip(t, s.current, filepath.Join("releases", "B"))
	got, err := r.Resolve(s.current)
	require.NoError(t, err)
	assert.Equal(t, s.b, got, "the flip is seen at once")

	assert.EqualValues(t, 4, r.Resolutions())
	assert.EqualValues(t, 0, r.Hits())
	assert.EqualValues(t, 4, r.Misses())
	assert.Zero(t, r.Len())
}

func TestResolveUnresolvable(t *testing.T) {
	s := newSite(t)
	dangling := symlink(t, filepath.Join(s.root, "releases", "gone"), filepath.Join(s.root, "dangling"))
	loopA := filepath.Join(s.root, "loopA")
	symlink(t, "loopB", loopA)
	symlink(t, "loopA", filepath.Join(s.root, "loopB"))
	self := symlink(t, "self", filepath.Join(s.root, "self"))
	file := filepath.Join(s.a, "index.php")
	require.NoError(t, os.WriteFile(file, []byte("<?php\n"), 0o644))
	fileLink := symlink(t, file, filepath.Join(s.root, "filelink"))

	tests := []struct {
		desc     string
		docroot  string
		notExist bool // the cause is fs.ErrNotExist
	}{
		{"missing", filepath.Join(s.root, "nope"), true},
		{"missing below link", s.current + "/nope", true},
		{"dangling link", dangling, true},
		{"dangling link below", dangling + "/public", true},
		{"loop", loopA, false},
		{"self loop", self, false},
		{"regular file", file, false},
		{"link to a regular file", fileLink, false},
		{"file as a directory", file + "/x", false},
		{"NUL byte", s.current + "\x00/../../etc", false},
		{"relative", "releases/A", false},
		{"dot relative", "./current", false},
		{"empty", "", false},
		{"too long", "/" + strings.Repeat("a", maxPathLen), false},
	}
	for _, mode := range []struct {
		name        string
		useReadlink bool
	}{{"realpath", false}, {"readlink", true}} {
		for _, tt := range tests {
			t.Run(mode.name+"/"+tt.desc, func(t *testing.T) {
				clk := newClock()
				r := Resolver{Every: time.Minute, Now: clk.Now, UseReadlink: mode.useReadlink}

				got, err := r.Resolve(tt.docroot)
				require.ErrorIs(t, err, ErrUnresolvable)
				assert.NotErrorIs(t, err, ErrOutsideRoot)
				assert.Empty(t, got)
				assert.True(t, strings.HasPrefix(err.Error(), fmt.Sprintf("pin: resolve %q: ", tt.docroot)), err.Error())
				if tt.notExist {
					assert.ErrorIs(t, err, fs.ErrNotExist)
				}

				// Failures are not cached: the next call tries again.
				_, err = r.Resolve(tt.docroot)
				require.ErrorIs(t, err, ErrUnresolvable)
				assert.EqualValues(t, 2, r.Resolutions())
				assert.Zero(t, r.Len())
			})
		}
	}
}

// A docroot that is missing for a moment (a deploy replacing it) works again
// on the next request, not after Every.
func TestResolveFailureRecovers(t *testing.T) {
	s := newSite(t)
	clk := newClock()
	r := Resolver{Every: time.Hour, Now: clk.Now}
	docroot := filepath.Join(s.root, "later")

	_, err := r.Resolve(docroot)
	require.ErrorIs(t, err, ErrUnresolvable)

	symlink(t, s.b, docroot)
	got, err := r.Resolve(docroot)
	require.NoError(t, err)
	assert.Equal(t, s.b, got)
}

func TestResolveAllowRoots(t *testing.T) {
	base, err := filepath.EvalSymlinks(t.TempDir())
	require.NoError(t, err)
	www := mkdir(t, filepath.Join(base, "srv", "www"))
	www2 := mkdir(t, filepath.Join(base, "srv", "www2"))
	mkdir(t, filepath.Join(www, "releases", "A"))
	mkdir(t, filepath.Join(www2, "releases", "A"))
	etc := mkdir(t, filepath.Join(base, "etc"))
	symlink(t, "releases/A", filepath.Join(www, "current"))
	symlink(t, "releases/A", filepath.Join(www2, "current"))
	symlink(t, etc, filepath.Join(www, "escape"))

	tests := []struct {
		desc    string
		allow   []string
		docroot string
		want    string // "" for ErrOutsideRoot
	}{
		{"below the root", []string{www}, filepath.Join(www, "current"), filepath.Join(www, "releases", "A")},
		{"the root itself", []string{www}, www, www},
		{"root with trailing slash", []string{www + "/"}, filepath.Join(www, "current"), filepath.Join(www, "releases", "A")},
		{"second root", []string{etc, www2}, filepath.Join(www2, "current"), filepath.Join(www2, "releases", "A")},
		{"sibling with the root as prefix", []string{www}, filepath.Join(www2, "current"), ""},
		{"link escaping the root", []string{www}, filepath.Join(www, "escape"), ""},
		{"parent of the root", []string{www}, filepath.Join(base, "srv"), ""},
		{"slash allows all", []string{"/"}, filepath.Join(www, "escape"), etc},
		{"empty roots are skipped", []string{""}, filepath.Join(www, "current"), ""},
		{"relative roots never match", []string{strings.TrimPrefix(www, "/")}, filepath.Join(www, "current"), ""},
		{"no roots allow all", nil, filepath.Join(www, "escape"), etc},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			r := Resolver{AllowRoots: tt.allow}
			got, err := r.Resolve(tt.docroot)
			if tt.want == "" {
				require.ErrorIs(t, err, ErrOutsideRoot)
				assert.NotErrorIs(t, err, ErrUnresolvable)
				assert.Contains(t, err.Error(), fmt.Sprintf("pin: resolve %q: ", tt.docroot))
				assert.Empty(t, got)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestResolveReadlink(t *testing.T) {
	base, err := filepath.EvalSymlinks(t.TempDir())
	require.NoError(t, err)
	in := func(p ...string) string { return filepath.Join(append([]string{base}, p...)...) }

	// The A/B layout from mod_realdoc's README:
	// current -> A -> release-12, B -> release-13.
	mkdir(t, in("release-12", "public"))
	mkdir(t, in("release-13", "public"))
	symlink(t, in("release-12"), in("A"))
	symlink(t, "release-13", in("B"))
	symlink(t, in("A"), in("current"))
	symlink(t, "B", in("relcurrent"))

	// A link above the docroot's own link: /data/www -> real.
	mkdir(t, in("real", "site", "release-1"))
	symlink(t, "release-1", in("real", "site", "current"))
	symlink(t, in("real"), in("data"))

	// Relative target climbing out: sites/x/current -> ../../releases/r1.
	mkdir(t, in("releases", "r1"))
	mkdir(t, in("sites", "x"))
	symlink(t, "../../releases/r1", in("sites", "x", "current"))

	// No link at all.
	mkdir(t, in("plain", "dir"))

	tests := []struct {
		desc    string
		prefix  string
		docroot string
		want    string
	}{
		{"link as last component", "", in("current"), in("A")},
		{"only the first link is read", "", in("current", "public"), in("A", "public")},
		{"relative target", "", in("relcurrent"), in("B")},
		{"relative target, below", "", in("relcurrent", "public"), in("B", "public")},
		{"relative target with ..", "", in("sites", "x", "current"), in("releases", "r1")},
		{"trailing slash and dots", "", in("current") + "/./public/", in("A", "public")},
		{"no link", "", in("plain", "dir"), in("plain", "dir")},
		{"prefix is the link", in("current"), in("current"), in("A")},
		{"prefix is the link, below", in("current"), in("current", "public"), in("A", "public")},
		{"prefix trailing slash", in("current") + "/", in("current"), in("A")},
		{"no prefix takes the link above", "", in("data", "site", "current"), in("real", "site", "current")},
		{"prefix skips the link above", in("data", "site"), in("data", "site", "current"), in("data", "site", "release-1")},
		{"prefix at the link skips the link above", in("data", "site", "current"), in("data", "site", "current"), in("data", "site", "release-1")},
		{"docroot outside the prefix is examined from /", in("elsewhere"), in("current"), in("A")},
		{"prefix matches whole components", in("cur"), in("current"), in("A")},
		{"prefix below the link", in("current", "public"), in("current", "public"), in("current", "public")},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			r := Resolver{UseReadlink: true, ReadlinkPrefix: tt.prefix}
			got, err := r.Resolve(tt.docroot)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}

	t.Run("dotdot refused", func(t *testing.T) {
		r := Resolver{UseReadlink: true}
		_, err := r.Resolve(in("current") + "/../B")
		require.ErrorIs(t, err, ErrUnresolvable)
		assert.Contains(t, err.Error(), `".." component`)
	})
	t.Run("relative prefix refused", func(t *testing.T) {
		r := Resolver{UseReadlink: true, ReadlinkPrefix: "srv/www"}
		_, err := r.Resolve(in("current"))
		require.ErrorIs(t, err, ErrUnresolvable)
	})
	t.Run("allow roots checked on the readlink result", func(t *testing.T) {
		r := Resolver{UseReadlink: true, AllowRoots: []string{in("A")}}
		got, err := r.Resolve(in("current"))
		require.NoError(t, err)
		assert.Equal(t, in("A"), got)

		r = Resolver{UseReadlink: true, AllowRoots: []string{in("release-12")}}
		_, err = r.Resolve(in("current"))
		require.ErrorIs(t, err, ErrOutsideRoot)
	})
}

// The readlink walk lstats the components at or below the prefix, in order,
// and reads one link.
func TestResolveReadlinkSyscalls(t *testing.T) {
	s := newSite(t)
	var lstats, readlinks []string
	r := Resolver{
		UseReadlink:    true,
		ReadlinkPrefix: s.root,
		Lstat: func(p string) (fs.FileInfo, error) {
			lstats = append(lstats, p)
			return os.Lstat(p)
		},
		Readlink: func(p string) (string, error) {
			readlinks = append(readlinks, p)
			return os.Readlink(p)
		},
	}
	got, err := r.Resolve(s.current + "/public")
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(s.a, "public"), got)
	assert.Equal(t, []string{s.root, s.current}, lstats)
	assert.Equal(t, []string{s.current}, readlinks)
}

// Issue: mod_realdoc #4 raced under threaded MPMs. Fifty requests that find
// the entry expired share one resolution.
func TestResolveSingleflight(t *testing.T) {
	s := newSite(t)
	clk := newClock()
	var calls atomic.Int32
	started := make(chan struct{})
	release := make(chan struct{})
	r := Resolver{
		Every: time.Second,
		Now:   clk.Now,
		EvalSymlinks: func(p string) (string, error) {
			if calls.Add(1) == 2 {
				close(started)
				<-release
			}
			return filepath.EvalSymlinks(p)
		},
	}
	_, err := r.Resolve(s.current)
	require.NoError(t, err)
	flip(t, s.current, filepath.Join("releases", "B"))
	clk.Advance(time.Second)

	const n = 50
	var wg sync.WaitGroup
	results := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			results[i], errs[i] = r.Resolve(s.current)
		})
	}
	<-started
	// Every goroutine has missed and is either resolving or waiting.
	require.Eventually(t, func() bool { return r.Misses() == 1+n }, 5*time.Second, time.Millisecond)
	close(release)
	wg.Wait()

	for i := range n {
		require.NoError(t, errs[i])
		assert.Equal(t, s.b, results[i])
	}
	assert.EqualValues(t, 2, calls.Load())
	assert.EqualValues(t, 2, r.Resolutions())
	assert.EqualValues(t, 0, r.Hits())

	got, err := r.Resolve(s.current)
	require.NoError(t, err)
	assert.Equal(t, s.b, got)
	assert.EqualValues(t, 1, r.Hits(), "the shared result was cached")
}

// A failed shared resolution fails every waiter, and is not cached.
func TestResolveSingleflightError(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	var calls atomic.Int32
	r := Resolver{
		Every: time.Second,
		EvalSymlinks: func(p string) (string, error) {
			if calls.Add(1) == 1 {
				close(started)
				<-release
			}
			return "", &fs.PathError{Op: "lstat", Path: p, Err: fs.ErrNotExist}
		},
	}
	const n = 10
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { _, errs[i] = r.Resolve("/srv/www/current") })
	}
	<-started
	require.Eventually(t, func() bool { return r.Misses() == n }, 5*time.Second, time.Millisecond)
	close(release)
	wg.Wait()
	for _, err := range errs {
		assert.ErrorIs(t, err, ErrUnresolvable)
		assert.ErrorIs(t, err, fs.ErrNotExist)
	}
	assert.EqualValues(t, 1, calls.Load())
	assert.Zero(t, r.Len())
}

// A resolution that panics (only a hook can) releases its waiters with an
// error instead of leaving them blocked.
func TestResolvePanicReleasesWaiters(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	r := Resolver{
		Every: time.Second,
		EvalSymlinks: func(string) (string, error) {
			close(started)
			<-release
			panic("boom")
		},
	}
	panicked := make(chan any, 1)
	go func() {
		defer func() { panicked <- recover() }()
		r.Resolve("/srv/www/current")
	}()
	<-started
	waiter := make(chan error, 1)
	go func() {
		_, err := r.Resolve("/srv/www/current")
		waiter <- err
	}()
	require.Eventually(t, func() bool { return r.Misses() == 2 }, 5*time.Second, time.Millisecond)
	close(release)
	assert.Equal(t, "boom", <-panicked)
	assert.ErrorIs(t, <-waiter, errResolvePanicked)
	assert.Zero(t, r.Len())
}

func TestResolveForget(t *testing.T) {
	s := newSite(t)
	clk := newClock()
	r := Resolver{Every: time.Hour, Now: clk.Now}
	other := filepath.Join(s.root, "other")
	symlink(t, s.b, other)

	_, err := r.Resolve(s.current)
	require.NoError(t, err)
	_, err = r.Resolve(other)
	require.NoError(t, err)
	flip(t, s.current, filepath.Join("releases", "B"))

	r.Forget(s.current)
	got, err := r.Resolve(s.current)
	require.NoError(t, err)
	assert.Equal(t, s.b, got)
	_, err = r.Resolve(other)
	require.NoError(t, err)
	assert.EqualValues(t, 3, r.Resolutions(), "other stayed cached")

	r.Flush()
	assert.Zero(t, r.Len())
	_, err = r.Resolve(s.current)
	require.NoError(t, err)
	_, err = r.Resolve(other)
	require.NoError(t, err)
	assert.EqualValues(t, 5, r.Resolutions())

	r.Forget("/never/seen") // no-op
}

// A watcher's Forget that lands while a resolution is under way must win:
// the resolution may have read the link before the flip.
func TestResolveForgetDuringResolution(t *testing.T) {
	for _, drop := range []struct {
		name string
		fn   func(r *Resolver, docroot string)
	}{
		{"Forget", func(r *Resolver, docroot string) { r.Forget(docroot) }},
		{"Flush", func(r *Resolver, _ string) { r.Flush() }},
	} {
		t.Run(drop.name, func(t *testing.T) {
			s := newSite(t)
			var calls atomic.Int32
			started := make(chan struct{})
			release := make(chan struct{})
			r := Resolver{
				Every: time.Hour,
				EvalSymlinks: func(p string) (string, error) {
					if calls.Add(1) == 1 {
						// Read the link, then let the flip happen.
						got, err := filepath.EvalSymlinks(p)
						close(started)
						<-release
						return got, err
					}
					return filepath.EvalSymlinks(p)
				},
			}
			first := make(chan string, 1)
			go func() {
				got, _ := r.Resolve(s.current)
				first <- got
			}()
			<-started
			flip(t, s.current, filepath.Join("releases", "B"))
			drop.fn(&r, s.current)

			// A request after the Forget does not join the stale resolution.
			got, err := r.Resolve(s.current)
			require.NoError(t, err)
			assert.Equal(t, s.b, got)

			close(release)
			assert.Equal(t, s.a, <-first)

			// The stale result did not overwrite the fresh one.
			got, err = r.Resolve(s.current)
			require.NoError(t, err)
			assert.Equal(t, s.b, got)
			assert.EqualValues(t, 2, calls.Load())
		})
	}
}

func TestResolveMaxEntries(t *testing.T) {
	s := newSite(t)
	clk := newClock()
	var docroots []string
	for i := range 5 {
		docroots = append(docroots, symlink(t, s.a, filepath.Join(s.root, fmt.Sprint("d", i))))
	}

	r := Resolver{Every: time.Hour, Now: clk.Now, MaxEntries: 3}
	for _, d := range docroots[:3] {
		_, err := r.Resolve(d)
		require.NoError(t, err)
	}
	assert.Equal(t, 3, r.Len())

	// Refreshing a cached docroot when full keeps the others.
	clk.Advance(time.Hour)
	_, err := r.Resolve(docroots[0])
	require.NoError(t, err)
	assert.Equal(t, 3, r.Len())

	// A new docroot when full drops the cache.
	_, err = r.Resolve(docroots[3])
	require.NoError(t, err)
	assert.Equal(t, 1, r.Len())

	unbounded := Resolver{Every: time.Hour, MaxEntries: -1}
	for _, d := range docroots {
		_, err := unbounded.Resolve(d)
		require.NoError(t, err)
	}
	assert.Equal(t, 5, unbounded.Len())

	assert.Equal(t, DefaultMaxEntries, (&Resolver{}).maxEntries())
}

// A cache hit makes no path system call: every file-system hook is counted.
func TestResolveCachedNoSyscalls(t *testing.T) {
	s := newSite(t)
	var syscalls atomic.Int32
	r := Resolver{
		Every: time.Hour,
		EvalSymlinks: func(p string) (string, error) {
			syscalls.Add(1)
			return filepath.EvalSymlinks(p)
		},
		Lstat: func(p string) (fs.FileInfo, error) {
			syscalls.Add(1)
			return os.Lstat(p)
		},
		Readlink: func(p string) (string, error) {
			syscalls.Add(1)
			return os.Readlink(p)
		},
		Stat: func(p string) (fs.FileInfo, error) {
			syscalls.Add(1)
			return os.Stat(p)
		},
	}
	_, err := r.Resolve(s.current)
	require.NoError(t, err)
	before := syscalls.Load()
	require.NotZero(t, before)

	for range 1000 {
		got, err := r.Resolve(s.current)
		require.NoError(t, err)
		require.Equal(t, s.a, got)
	}
	assert.Equal(t, before, syscalls.Load())
	assert.EqualValues(t, 1, r.Resolutions())
	assert.EqualValues(t, 1000, r.Hits())
	assert.EqualValues(t, 1, r.Misses())
}

func TestResolveCachedNoAlloc(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	s := newSite(t)
	r := Resolver{Every: time.Hour}
	_, err := r.Resolve(s.current)
	require.NoError(t, err)
	assert.Zero(t, testing.AllocsPerRun(1000, func() { r.Resolve(s.current) }))
}

// The caller may pass a docroot that aliases a reused read buffer; the cache
// must keep its own copy of the key.
func TestResolveCopiesKey(t *testing.T) {
	s := newSite(t)
	r := Resolver{Every: time.Hour}
	buf := []byte(s.current)
	transient := unsafe.String(&buf[0], len(buf))

	got, err := r.Resolve(transient)
	require.NoError(t, err)
	assert.Equal(t, s.a, got)
	for i := range buf {
		buf[i] = 'x'
	}

	got, err = r.Resolve(s.current)
	require.NoError(t, err)
	assert.Equal(t, s.a, got)
	assert.EqualValues(t, 1, r.Hits(), "found under the original key")
}

// Requests, flips and flushes at once: every answer is one of the releases.
// Run with -race.
func TestResolveConcurrentFlips(t *testing.T) {
	s := newSite(t)
	for _, readlink := range []bool{false, true} {
		t.Run(fmt.Sprint("readlink=", readlink), func(t *testing.T) {
			clk := newClock()
			r := Resolver{Every: time.Millisecond, Now: clk.Now, UseReadlink: readlink, MaxEntries: 2}
			docroots := []string{s.current, s.current + "/", s.current + "/public"}
			want := map[string]bool{
				s.a: true, s.b: true,
				filepath.Join(s.a, "public"): true, filepath.Join(s.b, "public"): true,
			}
			var wg sync.WaitGroup
			stop := make(chan struct{})
			wg.Go(func() {
				targets := []string{"releases/B", "releases/A"}
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					tmp := s.current + ".tmp"
					if err := os.Symlink(targets[i%2], tmp); err != nil {
						t.Error(err)
						return
					}
					if err := os.Rename(tmp, s.current); err != nil {
						t.Error(err)
						return
					}
					if i%7 == 0 {
						r.Flush()
					}
					if i%5 == 0 {
						r.Forget(s.current)
					}
				}
			})
			var workers sync.WaitGroup
			for w := range 8 {
				workers.Go(func() {
					for i := range 500 {
						if i%10 == 0 {
							clk.Advance(time.Millisecond)
						}
						got, err := r.Resolve(docroots[(w+i)%len(docroots)])
						if err != nil {
							t.Error(err)
							return
						}
						if !want[got] {
							t.Errorf("got %q; want a release", got)
							return
						}
					}
				})
			}
			workers.Wait()
			close(stop)
			wg.Wait()
			assert.Equal(t, r.Hits()+r.Misses(), uint64(8*500))
			assert.LessOrEqual(t, r.Len(), 2)
		})
	}
}

func TestErrorsAreDistinct(t *testing.T) {
	assert.False(t, errors.Is(ErrUnresolvable, ErrOutsideRoot))
	assert.True(t, strings.HasPrefix(ErrUnresolvable.Error(), "pin: "))
	assert.True(t, strings.HasPrefix(ErrOutsideRoot.Error(), "pin: "))
}

// An Every too large to add to the clock caches for good instead of never.
func TestResolveHugeEvery(t *testing.T) {
	s := newSite(t)
	r := Resolver{Every: time.Duration(math.MaxInt64)}
	for range 3 {
		got, err := r.Resolve(s.current)
		require.NoError(t, err)
		assert.Equal(t, s.a, got)
	}
	assert.EqualValues(t, 1, r.Resolutions())
}
