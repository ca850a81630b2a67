package fcgi

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/internal/testsupport"
)

// GetUnchecked hands out an idle connection without the system call that
// would show php-fpm closed it; the caller's replay uses Get, which does.
func TestPoolGetUnchecked(t *testing.T) {
	testsupport.CheckGoroutines(t)
	u := startUpstream(t, "tcp")
	p := &Pool{Address: u.address()}
	defer p.Close()
	a, _ := mustGet(t, p)
	mustRoundTrip(t, a, "conn 1")
	u.closeConns()
	require.True(t, testsupport.Eventually(time.Second, func() bool { return !a.alive() }), "closed connection still looks alive")
	p.Put(a)

	b, reused, err := p.GetUnchecked(context.Background())
	require.NoError(t, err)
	assert.Same(t, a, b, "not checked")
	assert.True(t, reused)
	p.Put(b)

	c, reused, err := p.Get(context.Background())
	require.NoError(t, err)
	assert.NotSame(t, a, c, "checked")
	assert.False(t, reused)
	mustRoundTrip(t, c, "conn 2")
	p.Put(c)
	assert.Equal(t, uint64(1), p.Stats().Stale)
}

// Bytes already read from an idle connection put it out of step: even
// GetUnchecked, which makes no system call, does not hand it out.
func TestPoolGetUncheckedBuffered(t *testing.T) {
	testsupport.CheckGoroutines(t)
	u := startUpstream(t, "tcp")
	u.stray.Store(true)
	p := &Pool{Address: u.address()}
	defer p.Close()
	a, _ := mustGet(t, p)
	mustRoundTrip(t, a, "conn 1")
	// Read the stray bytes into the connection's buffer.
	require.True(t, testsupport.Eventually(time.Second, func() bool {
		a.NetConn().SetReadDeadline(time.Now().Add(time.Millisecond))
		a.R.r.Peek(1)
		return a.R.Buffered() > 0
	}))
	p.Put(a)
	b, reused, err := p.GetUnchecked(context.Background())
	require.NoError(t, err)
	assert.NotSame(t, a, b)
	assert.False(t, reused)
	p.Put(b)
}
