package fcgi

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/internal/testsupport"
)

// Fresh never hands out a kept connection, and stays within MaxConns: with
// the one slot held by an idle connection, it closes that one and dials.
func TestPoolFresh(t *testing.T) {
	u := startUpstream(t, "tcp")
	p := &Pool{Address: u.address(), MaxConns: 1}
	defer p.Close()

	c, _ := mustGet(t, p)
	mustRoundTrip(t, c, "conn 1")
	p.Put(c)

	f, err := p.Fresh(context.Background())
	require.NoError(t, err)
	mustRoundTrip(t, f, "conn 2")
	assert.True(t, testsupport.Eventually(2*time.Second, func() bool { return u.closed.Load() == 1 }), "the kept connection is closed")
	st := p.Stats()
	assert.Equal(t, 1, st.Open)
	assert.Equal(t, uint64(2), st.Dials)

	// The slot is taken: another Fresh waits for it.
	ch := make(chan error, 1)
	go func() {
		c, err := p.Fresh(context.Background())
		if err == nil {
			p.Discard(c)
		}
		ch <- err
	}()
	select {
	case err := <-ch:
		t.Fatalf("Fresh did not wait for the busy slot: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	p.Discard(f)
	select {
	case err := <-ch:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Fresh did not get the freed slot")
	}
	assert.Equal(t, 0, p.Stats().Open)
}

func TestPoolFreshDialError(t *testing.T) {
	p := &Pool{Address: "127.0.0.1:1", MaxConns: 1}
	defer p.Close()
	_, err := p.Fresh(context.Background())
	require.ErrorIs(t, err, ErrDial)
	assert.Equal(t, 0, p.Stats().Open, "the slot is given back")
}
