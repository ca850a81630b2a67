package release

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/incpathd/incpathd/pathsafe"
)

// PreviousSuffix is appended to the link's path to name the symlink that
// records its previous target: current.previous.
const PreviousSuffix = ".previous"

// Link is a docroot symlink that Activate and Rollback point at releases.
type Link struct {
	// Path is the symlink, such as /srv/site/current; a relative path is
	// taken from the working directory. It need not exist before the
	// first Activate. It must be set.
	Path string

	// AllowRoots, when not empty, confines releases: the real path of a
	// release (every symlink resolved) must be one of these directories
	// or lie below one, by whole components, or the call fails with
	// ErrOutsideRoot. Give the same roots as incpathd's --allow-root, so
	// that a release activated here is never one the daemon refuses to
	// serve. The roots must be absolute and, as for the daemon, free of
	// symlinks themselves.
	AllowRoots []string

	// LockTimeout bounds the wait for the lock on the link's directory,
	// held by another Activate or Rollback of a link there (see
	// Concurrency in the package documentation), or by any process holding
	// flock(2) on the directory. If zero, DefaultLockTimeout; if negative,
	// no limit.
	LockTimeout time.Duration
}

// DefaultLockTimeout is the wait for the lock when Link.LockTimeout is zero:
// far longer than any activation holds it.
const DefaultLockTimeout = 30 * time.Second

func (l *Link) lockTimeout() time.Duration {
	if l.LockTimeout == 0 {
		return DefaultLockTimeout
	}
	return l.LockTimeout
}

// Result says what Activate or Rollback did.
type Result struct {
	// Link is the absolute path of the link.
	Link string
	// Previous is the link's target before the call, as stored in the
	// link; "" if there was no link.
	Previous string
	// Target is the link's target after the call.
	Target string
	// Dir is the real path of the release directory Target names.
	Dir string
	// Changed is false when the link already named the release and
	// nothing was written.
	Changed bool
}

// PreviousPath returns the path of the symlink that records the link's
// previous target.
func (l *Link) PreviousPath() string { return l.Path + PreviousSuffix }

// Activate points the link at the release directory release (a relative
// path is taken from the working directory), after checking it, and records
// the link's old target for Rollback. The link and the record are each
// replaced atomically, the record first; then the directory is synced.
//
// If the link already resolves to release, nothing is written and
// Result.Changed is false. Errors wrap ErrNotLink, ErrNoRelease, ErrNotDir,
// ErrSelf, ErrOutsideRoot or ErrLocked, and the file-system error where
// there is one. ctx ends only the wait for the lock: once the flip has
// begun it runs to completion. When an error is returned and
// Result.Changed is false, the link was not changed; when Changed is true
// (a failed directory sync), it was.
func (l *Link) Activate(ctx context.Context, release string) (Result, error) {
	s, err := l.site()
	if err != nil {
		return Result{}, err
	}
	if release == "" {
		return Result{}, fmt.Errorf("%w: no release named", ErrNoRelease)
	}
	abs, err := filepath.Abs(release)
	if err != nil {
		return Result{}, fmt.Errorf("release: %w", err)
	}
	real, err := s.check(abs, l.AllowRoots)
	if err != nil {
		return Result{}, err
	}
	target := s.targetFor(abs)

	lock, err := lockDir(ctx, s.dir, l.lockTimeout())
	if err != nil {
		return Result{}, err
	}
	defer lock.unlock()
	prev, err := readLink(s.link)
	if err != nil {
		return Result{}, fmt.Errorf("%w; move it into a releases directory and activate it from there", err)
	}
	res := Result{Link: s.link, Previous: prev, Target: target, Dir: real}
	if prev != "" && sameDir(s.link, real) {
		res.Target = prev
		return res, nil
	}
	if err := s.record(prev); err != nil {
		return Result{}, err
	}
	if err := replaceLink(s.link, target); err != nil {
		return Result{}, fmt.Errorf("release: point %s at %s: %w", s.link, target, err)
	}
	res.Changed = true
	if err := lock.sync(); err != nil {
		return res, fmt.Errorf("release: %s now points at %s, but syncing %s failed: %w", s.link, target, s.dir, err)
	}
	return res, nil
}

// Rollback points the link back at the target recorded by the last
// Activate or Rollback, and records the target it replaces, so a second
// Rollback undoes the first. The recorded release is checked as Activate
// checks a release: one deleted since fails with ErrNoRelease. With no
// record it fails with ErrNoPrevious. If the link already names the
// recorded target, nothing is written and Result.Changed is false.
func (l *Link) Rollback(ctx context.Context) (Result, error) {
	s, err := l.site()
	if err != nil {
		return Result{}, err
	}
	lock, err := lockDir(ctx, s.dir, l.lockTimeout())
	if err != nil {
		return Result{}, err
	}
	defer lock.unlock()
	cur, err := readLink(s.link)
	if err != nil {
		return Result{}, err
	}
	record := s.link + PreviousSuffix
	prev, err := readLink(record)
	if err != nil {
		return Result{}, err
	}
	if prev == "" {
		return Result{}, fmt.Errorf("%w: %s does not exist", ErrNoPrevious, record)
	}
	real, err := s.check(s.targetPath(prev), l.AllowRoots)
	if err != nil {
		return Result{}, fmt.Errorf("previous release %s: %w", prev, err)
	}
	res := Result{Link: s.link, Previous: cur, Target: prev, Dir: real}
	if cur == prev {
		return res, nil
	}
	if err := s.record(cur); err != nil {
		return Result{}, err
	}
	if err := replaceLink(s.link, prev); err != nil {
		return Result{}, fmt.Errorf("release: point %s at %s: %w", s.link, prev, err)
	}
	res.Changed = true
	if err := lock.sync(); err != nil {
		return res, fmt.Errorf("release: %s now points at %s, but syncing %s failed: %w", s.link, prev, s.dir, err)
	}
	return res, nil
}

// site is a link's location, worked out once per call.
type site struct {
	link     string // absolute, clean
	dir      string // the link's directory, as named
	physLink string // the link's path with its directory's symlinks resolved
}

func (l *Link) site() (*site, error) {
	if l.Path == "" {
		return nil, errors.New("release: no link path given")
	}
	link, err := filepath.Abs(l.Path)
	if err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	if link == "/" {
		return nil, fmt.Errorf("%w: / cannot be the link", ErrNotLink)
	}
	for _, r := range l.AllowRoots {
		if !filepath.IsAbs(r) {
			return nil, fmt.Errorf("release: allowed root %q is not an absolute path", r)
		}
	}
	dir := filepath.Dir(link)
	physDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, fmt.Errorf("release: the link's directory: %w", err)
	}
	return &site{link: link, dir: dir, physLink: filepath.Join(physDir, filepath.Base(link))}, nil
}

// targetPath returns the path the kernel follows for the link target
// target: a relative target is taken from the directory the link is in, the
// physical one. It is not cleaned: with target "../releases/A" and the
// link's directory /srv/site a symlink to /data/site, the kernel goes to
// /data/releases/A, and a lexical filepath.Join to /srv/releases/A, which
// may be an allowed root where /data/releases is not. check resolves the
// result component by component, ".." after a symlink included.
func (s *site) targetPath(target string) string {
	if filepath.IsAbs(target) {
		return target
	}
	return filepath.Dir(s.physLink) + "/" + target
}

// check refuses a release, given as a clean absolute path, that cannot be
// activated, and returns its real path.
func (s *site) check(abs string, roots []string) (string, error) {
	if pathsafe.Within(abs, s.link) || pathsafe.Within(abs, s.link+PreviousSuffix) {
		return "", fmt.Errorf("%w: %s is the link or its record, or lies below them", ErrSelf, abs)
	}
	real, err := resolve(abs, s.physLink, s.physLink+PreviousSuffix)
	var through *throughError
	switch {
	case errors.As(err, &through):
		return "", fmt.Errorf("%w: %s %v", ErrSelf, abs, through)
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		return "", fmt.Errorf("%w: %s (%w)", ErrNoRelease, abs, err)
	case err != nil:
		return "", fmt.Errorf("release: %s: %w", abs, err)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", fmt.Errorf("release: %s: %w", abs, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("%w: %s", ErrNotDir, abs)
	}
	if pathsafe.Within(s.physLink, real) {
		return "", fmt.Errorf("%w: %s contains the link %s", ErrSelf, abs, s.link)
	}
	if len(roots) > 0 && !allowed(real, roots) {
		return "", fmt.Errorf("%w: %s is %s", ErrOutsideRoot, abs, real)
	}
	return real, nil
}

func allowed(real string, roots []string) bool {
	for _, r := range roots {
		if pathsafe.Within(real, filepath.Clean(r)) {
			return true
		}
	}
	return false
}

// targetFor returns what the link should hold to name the release abs:
// its path relative to the link's directory when it lies below it, so the
// site keeps working when moved or mounted elsewhere; else abs.
func (s *site) targetFor(abs string) string {
	if abs != s.dir && pathsafe.Within(abs, s.dir) {
		if rel, err := filepath.Rel(s.dir, abs); err == nil {
			return rel
		}
	}
	return abs
}

// record writes the previous-target record next to the link: prev, or
// nothing when there was no link (a record from before would name a release
// the link no longer came from).
func (s *site) record(prev string) error {
	path := s.link + PreviousSuffix
	if _, err := readLink(path); err != nil {
		return fmt.Errorf("%w; incpathd keeps the previous target there", err)
	}
	if prev == "" {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("release: %w", err)
		}
		return nil
	}
	if err := replaceLink(path, prev); err != nil {
		return fmt.Errorf("release: record the previous target in %s: %w", path, err)
	}
	return nil
}

// sameDir reports whether the link resolves to the directory dir.
func sameDir(link, dir string) bool {
	a, err := os.Stat(link)
	if err != nil {
		return false
	}
	b, err := os.Stat(dir)
	return err == nil && os.SameFile(a, b)
}
