package pathsafe

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestWithin(t *testing.T) {
	for _, c := range []struct {
		p, root string
		want    bool
	}{
		{"/srv/www", "/srv/www", true},
		{"/srv/www/a", "/srv/www", true},
		{"/srv/www2", "/srv/www", false},
		{"/srv", "/srv/www", false},
		{"/anything", "/", true},
		{"/", "/", true},
	} {
		assert.Equal(t, c.want, Within(c.p, c.root), "%s in %s", c.p, c.root)
	}
}

func TestHasDotDot(t *testing.T) {
	for p, want := range map[string]bool{
		"..":             true,
		"../x":           true,
		"/x/..":          true,
		"/x/../y":        true,
		"/x/./y":         false,
		"/x/...":         false,
		"/x/..y":         false,
		"/x/y..":         false,
		"/x/a..b/../c":   true,
		"/srv/www/x.php": false,
		"":               false,
	} {
		assert.Equal(t, want, HasDotDot(p), "HasDotDot(%q)", p)
	}
}

func TestUnsafe(t *testing.T) {
	assert.Empty(t, Unsafe("/srv/www/a..b/.../c"))
	assert.Equal(t, `".." component`, Unsafe("/srv/www/../etc"))
	assert.Equal(t, `".." component`, Unsafe("/srv/.."))
	assert.Equal(t, "NUL byte", Unsafe("/srv/www\x00/../x"), "the NUL is named first")
}

func TestWalk(t *testing.T) {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	require.NoError(t, err)
	a := filepath.Join(dir, "releases", "A")
	require.NoError(t, os.MkdirAll(filepath.Join(a, "public"), 0o755))
	require.NoError(t, os.Symlink("releases/A", filepath.Join(dir, "current")))
	require.NoError(t, os.WriteFile(filepath.Join(a, "f"), nil, 0o644))

	var seen []string
	w := Walker{Visit: func(_, _, next string) error { seen = append(seen, next); return nil }}
	got, fi, err := w.Walk(dir + "/current/./public/")
	require.NoError(t, err)
	assert.Equal(t, a+"/public", got)
	assert.True(t, fi.IsDir())
	assert.Contains(t, seen, dir+"/current", "the link itself is looked up")
	assert.Contains(t, seen, dir+"/releases/A", "and its target")

	got, _, err = (&Walker{}).Walk(dir + "/current/public/../f")
	require.NoError(t, err)
	assert.Equal(t, a+"/f", got, "a .. after a link is physical")

	_, _, err = (&Walker{}).Walk(dir + "/current/f/x")
	assert.ErrorIs(t, err, syscall.ENOTDIR)

	stop := errors.New("stop")
	_, _, err = (&Walker{Visit: func(_, _, next string) error {
		if next == dir+"/releases" {
			return stop
		}
		return nil
	}}).Walk(dir + "/current")
	assert.ErrorIs(t, err, stop)
}

func TestWalkLinkLimit(t *testing.T) {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	require.NoError(t, err)
	require.NoError(t, os.Mkdir(filepath.Join(dir, "l0"), 0o755))
	for i := 1; i <= MaxLinks+1; i++ {
		require.NoError(t, os.Symlink("l"+strconv.Itoa(i-1), filepath.Join(dir, "l"+strconv.Itoa(i))))
	}
	got, _, err := (&Walker{}).Walk(filepath.Join(dir, "l"+strconv.Itoa(MaxLinks)))
	require.NoError(t, err, "MaxLinks links resolve")
	assert.Equal(t, dir+"/l0", got)
	_, _, err = (&Walker{}).Walk(filepath.Join(dir, "l"+strconv.Itoa(MaxLinks+1)))
	assert.ErrorIs(t, err, syscall.ELOOP)
}
