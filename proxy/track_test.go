package proxy

import (
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/inflight"
	"github.com/incpathd/incpathd/internal/fcgitest"
	"github.com/incpathd/incpathd/sapi"
)

func TestPinCounted(t *testing.T) {
	current, a, _ := site(t)
	p := &Proxy{Resolver: &sapi.Resolver{Every: time.Hour}, Releases: &inflight.Tracker{}}
	out, c, err := p.pinCounted(nil, nginxParams(current), &exchange{})
	require.NoError(t, err)
	assert.Equal(t, a, c.Release())
	assert.Equal(t, a, param(out, "DOCUMENT_ROOT"))
	assert.Equal(t, []inflight.Release{{Path: a, InFlight: 1}}, p.Releases.Snapshot())
	c.Done()
	assert.Empty(t, p.Releases.Snapshot())
	assert.Equal(t, uint64(1), p.Stats().Pinned.Load())

	// Not pinned, not counted.
	p.Policy = sapi.Policy{RealpathList: []string{}}
	_, c, err = p.pinCounted(nil, nginxParams(current), &exchange{})
	require.NoError(t, err)
	assert.Nil(t, c)

	// Trusted docroots are counted as sent.
	p.Policy = sapi.Policy{DocrootList: []string{"nginx"}}
	_, c, err = p.pinCounted(nil, nginxParams(a), &exchange{})
	require.NoError(t, err)
	assert.Equal(t, a, c.Release())
	c.Done()

	// Without a Tracker nothing is counted.
	p = &Proxy{Resolver: &sapi.Resolver{Every: time.Hour}}
	_, c, err = p.pinCounted(nil, nginxParams(current), &exchange{})
	require.NoError(t, err)
	assert.Nil(t, c)
}

// A release the Resolver dropped between the resolution and the count is
// not used: the request is pinned again to the new one, so a drain that
// saw the old release idle and uncached was right.
func TestPinCountedRepinsAfterForget(t *testing.T) {
	current, a, b := site(t)
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
	out, c, err := p.pinCounted(nil, nginxParams(current), &exchange{})
	require.NoError(t, err)
	require.Equal(t, 2, calls)
	assert.Equal(t, b, c.Release())
	assert.Equal(t, b, param(out, "DOCUMENT_ROOT"))
	assert.Equal(t, b+"/index.php", param(out, "SCRIPT_FILENAME"))
	assert.Zero(t, p.Releases.InFlight(a), "the count on A was given back")
	assert.Equal(t, []inflight.Release{{Path: b, InFlight: 1}}, p.Releases.Snapshot())
	// Pinned twice, one request: requests_pinned_total counts it once.
	assert.Equal(t, uint64(1), p.Stats().Pinned.Load())
	c.Done()
}

// A request counts on its release while upstream has it, and stops
// counting when it ends, whether it succeeded or failed.
func TestServeCountsInFlight(t *testing.T) {
	current, a, _ := site(t)
	entered := make(chan struct{})
	release := make(chan struct{})
	var fail atomic.Bool
	u := fcgitest.StartHandler(t, func(w *fcgi.ResponseWriter, r *fcgi.Request) {
		if fail.Load() {
			w.Abandon() // the connection drops before any answer
			return
		}
		entered <- struct{}{}
		<-release
		ok(w, r)
	})
	p := &Proxy{
		Pool:     &fcgi.Pool{Address: u.Addr, MaxConns: 2},
		Resolver: &sapi.Resolver{Every: time.Hour},
		Releases: &inflight.Tracker{},
	}
	addr := front(t, p)

	c := fcgitest.Dial(t, addr)
	require.NoError(t, c.Send(nginxParams(current), nil, true))
	<-entered
	assert.Equal(t, []inflight.Release{{Path: a, InFlight: 1}}, p.Releases.Snapshot())
	close(release)
	res := c.Read()
	require.NoError(t, res.Err)
	assert.Contains(t, string(res.Stdout), "hello")
	// Done just after END_REQUEST went out: the web server may see the
	// answer a moment before the count drops, never after.
	assert.Eventually(t, func() bool { return len(p.Releases.Snapshot()) == 0 }, 5*time.Second, time.Millisecond)

	// A failed request is done too.
	fail.Store(true)
	res = c.Do(nginxParams(current), nil)
	require.NoError(t, res.Err)
	assert.Contains(t, string(res.Stdout), "Status: 502")
	assert.Eventually(t, func() bool { return len(p.Releases.Snapshot()) == 0 }, 5*time.Second, time.Millisecond)
}
