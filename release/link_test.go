package release

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// newSite makes root/releases/<name> for each name and returns root, with
// symlinks resolved (t.TempDir may sit below one).
func newSite(t *testing.T, names ...string) string {
	t.Helper()
	root, err := filepath.EvalSymlinks(t.TempDir())
	require.NoError(t, err)
	for _, n := range names {
		require.NoError(t, os.MkdirAll(filepath.Join(root, "releases", n), 0o755))
	}
	return root
}

func target(t *testing.T, link string) string {
	t.Helper()
	s, err := os.Readlink(link)
	require.NoError(t, err)
	return s
}

// assertOnly checks that dir holds exactly the names given: no temporary
// links left behind.
func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	slices.Sort(names)
	assert.Equal(t, names, got, "entries of %s", dir)
}

func TestActivateAndRollback(t *testing.T) {
	root := newSite(t, "A", "B")
	cur := filepath.Join(root, "current")
	l := &Link{Path: cur}

	// First deploy: no link yet, nothing to record.
	res, err := l.Activate(t.Context(), filepath.Join(root, "releases", "A"))
	require.NoError(t, err)
	assert.Equal(t, Result{Link: cur, Target: "releases/A", Dir: filepath.Join(root, "releases", "A"), Changed: true}, res)
	assert.Equal(t, "releases/A", target(t, cur), "a sibling release gets a relative target")
	assertOnly(t, root, "current", "releases")

	res, err = l.Activate(t.Context(), filepath.Join(root, "releases", "B"))
	require.NoError(t, err)
	assert.Equal(t, Result{Link: cur, Previous: "releases/A", Target: "releases/B", Dir: filepath.Join(root, "releases", "B"), Changed: true}, res)
	assert.Equal(t, "releases/B", target(t, cur))
	assert.Equal(t, "releases/A", target(t, l.PreviousPath()))
	assertOnly(t, root, "current", "current.previous", "releases")

	// The active release again: nothing written, the record kept.
	res, err = l.Activate(t.Context(), filepath.Join(root, "releases", "B")+"/")
	require.NoError(t, err)
	assert.False(t, res.Changed)
	assert.Equal(t, "releases/B", res.Target)
	assert.Equal(t, "releases/A", target(t, l.PreviousPath()), "re-activating must not lose the rollback target")

	res, err = l.Rollback(t.Context())
	require.NoError(t, err)
	assert.Equal(t, Result{Link: cur, Previous: "releases/B", Target: "releases/A", Dir: filepath.Join(root, "releases", "A"), Changed: true}, res)
	assert.Equal(t, "releases/A", target(t, cur))
	assert.Equal(t, "releases/B", target(t, l.PreviousPath()), "a second rollback undoes the first")

	res, err = l.Rollback(t.Context())
	require.NoError(t, err)
	assert.True(t, res.Changed)
	assert.Equal(t, "releases/B", target(t, cur))
	assertOnly(t, root, "current", "current.previous", "releases")
}

func TestActivateTargets(t *testing.T) {
	root := newSite(t, "A", "release-12")
	cur := filepath.Join(root, "current")
	l := &Link{Path: cur}

	// A release outside the link's directory gets an absolute target.
	elsewhere := newSite(t, "X")
	x := filepath.Join(elsewhere, "releases", "X")
	_, err := l.Activate(t.Context(), x)
	require.NoError(t, err)
	assert.Equal(t, x, target(t, cur))

	// A release named through a symlink keeps that name (UseReadlink sites
	// flip between stable names so opcache entries survive).
	require.NoError(t, os.Symlink("release-12", filepath.Join(root, "releases", "B")))
	res, err := l.Activate(t.Context(), filepath.Join(root, "releases", "B"))
	require.NoError(t, err)
	assert.Equal(t, "releases/B", target(t, cur))
	assert.Equal(t, filepath.Join(root, "releases", "release-12"), res.Dir)

	// Relative paths are taken from the working directory.
	t.Chdir(root)
	l2 := &Link{Path: "current"}
	res, err = l2.Activate(t.Context(), "releases/A")
	require.NoError(t, err)
	assert.Equal(t, cur, res.Link)
	assert.Equal(t, "releases/B", res.Previous)
	assert.Equal(t, "releases/A", target(t, cur))

	// A dangling link is replaced, and recorded as it was.
	require.NoError(t, os.RemoveAll(filepath.Join(root, "releases", "A")))
	res, err = l.Activate(t.Context(), filepath.Join(root, "releases", "B"))
	require.NoError(t, err)
	assert.Equal(t, "releases/A", res.Previous)
	assert.Equal(t, "releases/B", target(t, cur))
}

func TestActivateRefuses(t *testing.T) {
	root := newSite(t, "A", "B")
	cur := filepath.Join(root, "current")
	rel := func(n string) string { return filepath.Join(root, "releases", n) }
	l := &Link{Path: cur}
	_, err := l.Activate(t.Context(), rel("A"))
	require.NoError(t, err)

	require.NoError(t, os.WriteFile(filepath.Join(root, "file"), nil, 0o644))
	require.NoError(t, os.Symlink("../current", rel("loop")))
	require.NoError(t, os.Symlink("../current.previous", rel("loop2")))
	require.NoError(t, os.Symlink("nowhere", rel("dangling")))

	for _, tt := range []struct {
		release string
		want    error
	}{
		{rel("C"), ErrNoRelease},
		{rel("dangling"), ErrNoRelease},
		{filepath.Join(root, "file", "x"), ErrNoRelease},
		{filepath.Join(root, "file"), ErrNotDir},
		{cur, ErrSelf},
		{cur + "/", ErrSelf},
		{filepath.Join(cur, "sub"), ErrSelf},
		{cur + PreviousSuffix, ErrSelf},
		{rel("loop"), ErrSelf},  // releases/loop -> ../current
		{rel("loop2"), ErrSelf}, // through the record
		{root, ErrSelf},         // it holds the link
		{"", ErrNoRelease},
	} {
		_, err := l.Activate(t.Context(), tt.release)
		assert.ErrorIs(t, err, tt.want, "Activate(%q)", tt.release)
		assert.Equal(t, "releases/A", target(t, cur), "after Activate(%q)", tt.release)
	}
	assertOnly(t, root, "current", "file", "releases")

	// Allowed roots: the real path must be inside one.
	l.AllowRoots = []string{filepath.Join(root, "releases", "A")}
	_, err = l.Activate(t.Context(), rel("B"))
	assert.ErrorIs(t, err, ErrOutsideRoot)
	l.AllowRoots = []string{"/nonexistent", filepath.Join(root, "releases")}
	_, err = l.Activate(t.Context(), rel("B"))
	assert.NoError(t, err)
	l.AllowRoots = []string{"releases"}
	_, err = l.Activate(t.Context(), rel("A"))
	assert.ErrorContains(t, err, "not an absolute path")
	l.AllowRoots = nil

	// A real directory where the link should be is never replaced.
	dirSite := newSite(t, "A")
	require.NoError(t, os.Mkdir(filepath.Join(dirSite, "current"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dirSite, "current", "index.php"), nil, 0o644))
	_, err = (&Link{Path: filepath.Join(dirSite, "current")}).Activate(t.Context(), filepath.Join(dirSite, "releases", "A"))
	assert.ErrorIs(t, err, ErrNotLink)
	assert.ErrorContains(t, err, "is a directory")
	assert.FileExists(t, filepath.Join(dirSite, "current", "index.php"))
	assertOnly(t, dirSite, "current", "releases")

	// Nor a file where the record should be.
	require.NoError(t, os.Remove(cur+PreviousSuffix))
	require.NoError(t, os.WriteFile(cur+PreviousSuffix, []byte("x"), 0o644))
	_, err = l.Activate(t.Context(), rel("A"))
	assert.ErrorIs(t, err, ErrNotLink)
	assert.Equal(t, "releases/B", target(t, cur))
	_, err = l.Rollback(t.Context())
	assert.ErrorIs(t, err, ErrNotLink)

	_, err = (&Link{}).Activate(t.Context(), rel("A"))
	assert.Error(t, err)
	_, err = (&Link{Path: "/"}).Activate(t.Context(), rel("A"))
	assert.ErrorIs(t, err, ErrNotLink)
}

func TestRollbackRefuses(t *testing.T) {
	root := newSite(t, "A", "B")
	cur := filepath.Join(root, "current")
	l := &Link{Path: cur}

	_, err := l.Rollback(t.Context())
	assert.ErrorIs(t, err, ErrNoPrevious, "no link, no record")
	_, err = l.Activate(t.Context(), filepath.Join(root, "releases", "A"))
	require.NoError(t, err)
	_, err = l.Rollback(t.Context())
	assert.ErrorIs(t, err, ErrNoPrevious, "the first activation records nothing")

	_, err = l.Activate(t.Context(), filepath.Join(root, "releases", "B"))
	require.NoError(t, err)
	// The previous release was deleted since: refused, link untouched.
	require.NoError(t, os.RemoveAll(filepath.Join(root, "releases", "A")))
	_, err = l.Rollback(t.Context())
	assert.ErrorIs(t, err, ErrNoRelease)
	assert.Equal(t, "releases/B", target(t, cur))

	// The previous release outside the allowed roots.
	require.NoError(t, os.Mkdir(filepath.Join(root, "releases", "A"), 0o755))
	l.AllowRoots = []string{filepath.Join(root, "releases", "B")}
	_, err = l.Rollback(t.Context())
	assert.ErrorIs(t, err, ErrOutsideRoot)
	assert.Equal(t, "releases/B", target(t, cur))
	assertOnly(t, root, "current", "current.previous", "releases")
}

func TestResolve(t *testing.T) {
	root := newSite(t, "A")
	require.NoError(t, os.Symlink("releases/A", filepath.Join(root, "cur")))
	require.NoError(t, os.Symlink(filepath.Join(root, "cur"), filepath.Join(root, "abs")))
	require.NoError(t, os.Symlink("self", filepath.Join(root, "self")))

	for p, want := range map[string]string{
		root + "/cur":              root + "/releases/A",
		root + "/abs":              root + "/releases/A",
		root + "/abs/..":           root + "/releases", // physical, not lexical
		root + "/./releases//A/":   root + "/releases/A",
		root + "/releases/A/../..": root,
	} {
		got, err := resolve(p)
		if assert.NoError(t, err, p) {
			assert.Equal(t, want, got, p)
			fromStd, err := filepath.EvalSymlinks(p)
			require.NoError(t, err)
			assert.Equal(t, fromStd, got, "agrees with filepath.EvalSymlinks: %s", p)
		}
	}
	_, err := resolve(root + "/self")
	assert.ErrorContains(t, err, "symlinks")
	_, err = resolve(root+"/abs", root+"/cur")
	assert.ErrorContains(t, err, "resolves through "+root+"/cur")
	_, err = resolve(root + "/missing/x")
	assert.ErrorIs(t, err, os.ErrNotExist)
}

// Issue #10, item 7: a relative record with ".." is followed from the link's
// real directory, as the kernel follows it, not from the directory as the
// link's path spells it. Here the site is reached through alias -> real/site;
// "../releases/A" from the link names real/releases/A on disk, outside the
// allowed root, while lexically from alias it names root/releases/A, inside.
func TestRollbackChecksThePhysicalTarget(t *testing.T) {
	root := newSite(t, "A")
	require.NoError(t, os.MkdirAll(filepath.Join(root, "real", "site"), 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(root, "real", "releases", "A"), 0o755))
	require.NoError(t, os.Symlink("real/site", filepath.Join(root, "alias")))
	cur := filepath.Join(root, "alias", "current")
	l := &Link{Path: cur, AllowRoots: []string{filepath.Join(root, "releases")}}
	_, err := l.Activate(t.Context(), filepath.Join(root, "releases", "A"))
	require.NoError(t, err)
	require.NoError(t, os.Symlink("../releases/A", cur+PreviousSuffix))

	_, err = l.Rollback(t.Context())
	assert.ErrorIs(t, err, ErrOutsideRoot)
	assert.ErrorContains(t, err, filepath.Join(root, "real", "releases", "A"), "names where the target leads on disk")
	assert.Equal(t, filepath.Join(root, "releases", "A"), target(t, cur), "link untouched")

	// Allowed where it really leads, the rollback goes through, and the
	// link then resolves to that directory.
	l.AllowRoots = []string{filepath.Join(root, "real", "releases")}
	res, err := l.Rollback(t.Context())
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(root, "real", "releases", "A"), res.Dir)
	got, err := filepath.EvalSymlinks(cur)
	require.NoError(t, err)
	assert.Equal(t, res.Dir, got)
}
