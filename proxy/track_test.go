package proxy

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/inflight"
	"github.com/incpathd/incpathd/sapi"
)

// testSite is root/releases/{A,B} and root/current -> releases/A.
func testSite(t *testing.T) (current, a, b string) {
	t.Helper()
	root, err := filepath.EvalSymlinks(t.TempDir())
	require.NoError(t, err)
	a, b = filepath.Join(root, "releases", "A"), filepath.Join(root, "releases", "B")
	require.NoError(t, os.MkdirAll(a, 0o755))
	require.NoError(t, os.MkdirAll(b, 0o755))
	current = filepath.Join(root, "current")
	require.NoError(t, os.Symlink("releases/A", current))
	return current, a, b
}

func requestParams(docroot string) []fcgi.Pair {
	return []fcgi.Pair{
		{Name: "SERVER_SOFTWARE", Value: "nginx/1.22.1"},
		{Name: "DOCUMENT_ROOT", Value: docroot},
		{Name: "SCRIPT_FILENAME", Value: docroot + "/index.php"},
	}
}

func TestPinCounted(t *testing.T) {
	current, a, _ := testSite(t)
	p := &Proxy{Resolver: &sapi.Resolver{Every: time.Hour}, Releases: &inflight.Tracker{}}
	out, c, err := p.pinCounted(nil, requestParams(current))
	require.NoError(t, err)
	assert.Equal(t, a, c.Release())
	assert.Equal(t, a, param(out, "DOCUMENT_ROOT"))
	assert.Equal(t, []inflight.Release{{Path: a, InFlight: 1}}, p.Releases.Snapshot())
	c.Done()
	assert.Empty(t, p.Releases.Snapshot())

	// Not pinned, not counted.
	p.Policy = sapi.Policy{RealpathList: []string{}}
	_, c, err = p.pinCounted(nil, requestParams(current))
	require.NoError(t, err)
	assert.Nil(t, c)

	// Trusted docroots are counted as sent.
	p.Policy = sapi.Policy{DocrootList: []string{"nginx"}}
	_, c, err = p.pinCounted(nil, requestParams(a))
	require.NoError(t, err)
	assert.Equal(t, a, c.Release())
	c.Done()

	// Without a Tracker nothing is counted.
	p = &Proxy{Resolver: &sapi.Resolver{Every: time.Hour}}
	_, c, err = p.pinCounted(nil, requestParams(current))
	require.NoError(t, err)
	assert.Nil(t, c)
}

// A release the Resolver dropped between the resolution and the count is
// not used: the request is pinned again to the new one, so a drain that
// saw the old release idle and uncached was right.
func TestPinCountedRepinsAfterForget(t *testing.T) {
	current, a, b := testSite(t)
	r := &sapi.Resolver{Every: time.Hour}
	calls := 0
	r.EvalSymlinks = func(path string) (string, error) {
		calls++
		got, err := filepath.EvalSymlinks(path)
		if calls == 1 {
			// The flip lands, and is seen, just after this resolution.
			tmp := current + ".tmp"
			require.NoError(t, os.Symlink("releases/B", tmp))
			require.NoError(t, os.Rename(tmp, current))
			r.Forget(current)
		}
		return got, err
	}
	p := &Proxy{Resolver: r, Releases: &inflight.Tracker{}}
	out, c, err := p.pinCounted(nil, requestParams(current))
	require.NoError(t, err)
	require.Equal(t, 2, calls)
	assert.Equal(t, b, c.Release())
	assert.Equal(t, b, param(out, "DOCUMENT_ROOT"))
	assert.Equal(t, b+"/index.php", param(out, "SCRIPT_FILENAME"))
	assert.Zero(t, p.Releases.InFlight(a), "the count on A was given back")
	assert.Equal(t, []inflight.Release{{Path: b, InFlight: 1}}, p.Releases.Snapshot())
	c.Done()
}
