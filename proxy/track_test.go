package proxy

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/inflight"
	"github.com/incpathd/incpathd/internal/fcgitest"
	"github.com/incpathd/incpathd/pin"
)

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
		Pool: &fcgi.Pool{Address: u.Addr, MaxConns: 2},
		Pinner: pin.Pinner{
			Resolver: &pin.Resolver{Every: time.Hour},
			Releases: &inflight.Tracker{},
		},
	}
	addr := front(t, p)

	c := fcgitest.Dial(t, addr)
	require.NoError(t, c.Send(nginxParams(current), nil, true))
	<-entered
	assert.Equal(t, []inflight.Release{{Path: a, InFlight: 1}}, p.Pinner.Releases.Snapshot())
	close(release)
	res := c.Read()
	require.NoError(t, res.Err)
	assert.Contains(t, string(res.Stdout), "hello")
	// Done just after END_REQUEST went out: the web server may see the
	// answer a moment before the count drops, never after.
	assert.Eventually(t, func() bool { return len(p.Pinner.Releases.Snapshot()) == 0 }, 5*time.Second, time.Millisecond)

	// A failed request is done too.
	fail.Store(true)
	res = c.Do(nginxParams(current), nil)
	require.NoError(t, res.Err)
	assert.Contains(t, string(res.Stdout), "Status: 502")
	assert.Eventually(t, func() bool { return len(p.Pinner.Releases.Snapshot()) == 0 }, 5*time.Second, time.Millisecond)
	assert.Equal(t, uint64(2), p.Stats().Pinned.Load(), "each request counted once as pinned")
}
