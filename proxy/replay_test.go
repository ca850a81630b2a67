package proxy

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/internal/fcgitest"
)

// When php-fpm restarts, every idle connection is dead at once. A request
// without a body takes the first one unchecked, fails before any answer,
// and is replayed on a checked connection: the other dead ones are skipped,
// not tried one by one, and the web server never sees the failure.
func TestReplaySkipsEveryDeadConnection(t *testing.T) {
	current, _, _ := site(t)
	const n = 3
	var (
		arrived sync.WaitGroup
		closed  sync.WaitGroup
		release = make(chan struct{})
		restart = make(chan struct{})
	)
	arrived.Add(n)
	closed.Add(n)
	addr := fcgitest.StartRaw(t, func(i int, c net.Conn) {
		r := fcgi.NewReader(c)
		if i < n {
			// The first n connections each serve one request, held until
			// all n are open, then die together.
			if readRequest(r) != nil {
				return
			}
			arrived.Done()
			<-release
			answer(c, "before")
			<-restart
			c.Close()
			closed.Done()
			return
		}
		for readRequest(r) == nil {
			answer(c, "after")
		}
	})
	p := &Proxy{Pool: &fcgi.Pool{Address: addr, MaxConns: n + 1}}
	front := front(t, p)
	var wg sync.WaitGroup
	for range n {
		c := fcgitest.Dial(t, front)
		wg.Add(1)
		go func() {
			defer wg.Done()
			require.NoError(t, c.Send(nginxParams(current), nil, true))
			res := c.Read()
			assert.NoError(t, res.Err)
			assert.Equal(t, "\r\nbefore", string(res.Stdout))
		}()
	}
	arrived.Wait()
	close(release)
	wg.Wait()
	// The answers can reach the clients before the connections are back in
	// the pool; and a failure here must not leave the upstream blocked.
	ok := assert.Eventually(t, func() bool { return p.Pool.Stats().Idle == n }, 5*time.Second, time.Millisecond)
	close(restart)
	require.True(t, ok, "idle connections: %d, want %d", p.Pool.Stats().Idle, n)
	closed.Wait()

	c := fcgitest.Dial(t, front)
	res := c.Do(nginxParams(current), nil)
	require.NoError(t, res.Err)
	assert.Equal(t, "\r\nafter", string(res.Stdout))
	assert.Equal(t, uint64(1), p.Stats().Retries.Load())
}
