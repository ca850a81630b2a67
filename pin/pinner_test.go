package pin

import (
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/inflight"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// siteDirs is newSite's current link and its two releases.
func siteDirs(t *testing.T) (current, a, b string) {
	s := newSite(t)
	return s.current, s.a, s.b
}

func nginxParams(docroot string) []fcgi.Pair {
	return []fcgi.Pair{
		{Name: "SCRIPT_FILENAME", Value: docroot + "/index.php"},
		{Name: "REQUEST_METHOD", Value: "GET"},
		{Name: "SCRIPT_NAME", Value: "/index.php"},
		{Name: "DOCUMENT_ROOT", Value: docroot},
		{Name: "SERVER_SOFTWARE", Value: "nginx/1.22.1"},
		{Name: "PHP_VALUE", Value: "include_path=\".:" + docroot + "/include\"\nmemory_limit=256M"},
	}
}

// mustPin pins in with p and fails the test on an error.
func mustPin(t *testing.T, p *Pinner, in []fcgi.Pair) Pinned {
	t.Helper()
	out, err := p.Pin(nil, nil, in)
	require.NoError(t, err)
	return out
}

func TestPinCounts(t *testing.T) {
	current, a, _ := siteDirs(t)
	p := &Pinner{Resolver: &Resolver{Every: time.Hour}, Releases: &inflight.Tracker{}}
	out := mustPin(t, p, nginxParams(current))
	assert.Equal(t, a, out.Release)
	assert.Equal(t, "nginx", out.FrontEnd)
	assert.Equal(t, a, out.counter.Release())
	assert.Equal(t, a, fcgi.Param(out.Params, "DOCUMENT_ROOT"))
	assert.Equal(t, []inflight.Release{{Path: a, InFlight: 1}}, p.Releases.Snapshot())
	out.Done()
	assert.Empty(t, p.Releases.Snapshot())

	// Not pinned, not counted.
	p.Policy = Policy{RealpathList: []string{}}
	out = mustPin(t, p, nginxParams(current))
	assert.Empty(t, out.Release)
	assert.Nil(t, out.counter)
	assert.Equal(t, current, fcgi.Param(out.Params, "DOCUMENT_ROOT"), "passed through as sent")

	// Trusted docroots are counted as sent.
	p.Policy = Policy{DocrootList: []string{"nginx"}}
	out = mustPin(t, p, nginxParams(a))
	assert.Equal(t, a, out.counter.Release())
	out.Done()

	// Without a Tracker nothing is counted.
	p = &Pinner{Resolver: &Resolver{Every: time.Hour}}
	out = mustPin(t, p, nginxParams(current))
	assert.Equal(t, a, out.Release)
	assert.Nil(t, out.counter)
	out.Done()
}

// The zero Pinner resolves every request anew: a flip is seen by the next
// request.
func TestZeroPinner(t *testing.T) {
	current, a, b := siteDirs(t)
	var p Pinner
	assert.Equal(t, a, mustPin(t, &p, nginxParams(current)).Release)
	flip(t, current, "releases/B")
	assert.Equal(t, b, mustPin(t, &p, nginxParams(current)).Release)

	_, err := p.Pin(nil, nil, []fcgi.Pair{{Name: "SERVER_SOFTWARE", Value: "nginx"}})
	assert.ErrorIs(t, err, ErrNoDocroot)
}

// A release the Resolver dropped between the resolution and the count is
// not used: the request is pinned again to the new one, so a drain that
// saw the old release idle and uncached was right.
func TestPinRepinsAfterForget(t *testing.T) {
	current, a, b := siteDirs(t)
	r := &Resolver{Every: time.Hour}
	calls := 0
	r.EvalSymlinks = func(path string) (string, error) {
		calls++
		got, err := filepath.EvalSymlinks(path)
		if calls == 1 {
			// The flip lands, and is seen, just after this resolution.
			flip(t, current, "releases/B")
			r.Forget(current)
		}
		return got, err
	}
	p := &Pinner{Resolver: r, Releases: &inflight.Tracker{}}
	out := mustPin(t, p, nginxParams(current))
	require.Equal(t, 2, calls)
	assert.Equal(t, b, out.Release)
	assert.Equal(t, b, out.counter.Release())
	assert.Equal(t, b, fcgi.Param(out.Params, "DOCUMENT_ROOT"))
	assert.Equal(t, b+"/index.php", fcgi.Param(out.Params, "SCRIPT_FILENAME"))
	assert.Len(t, out.Params, len(nginxParams(current)), "the first pin's params are gone")
	assert.Zero(t, p.Releases.InFlight(a), "the count on A was given back")
	assert.Equal(t, []inflight.Release{{Path: b, InFlight: 1}}, p.Releases.Snapshot())
	out.Done()
}
