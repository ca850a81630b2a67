package fcgi

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/internal/testsupport"
)

// downAddr returns a unix socket path where nothing listens yet (ENOENT,
// as while php-fpm is stopped) and a function that starts the fake
// upstream there.
func downAddr(t *testing.T) (string, func() *fakeUpstream) {
	path := filepath.Join(t.TempDir(), "fpm.sock")
	return "unix:" + path, func() *fakeUpstream {
		u := &fakeUpstream{network: "unix"}
		var err error
		u.l, err = net.Listen("unix", path)
		require.NoError(t, err)
		u.addr = path
		u.wg.Add(1)
		go u.accept()
		t.Cleanup(func() {
			u.l.Close()
			u.closeConns()
			u.wg.Wait()
		})
		return u
	}
}

// A request that finds php-fpm absent waits for it and goes on the moment
// it answers the probe; one line logs the start of the hold, one its end.
func TestHoldUntilUp(t *testing.T) {
	testsupport.CheckGoroutines(t)
	addr, startUp := downAddr(t)
	var log testsupport.LogBuffer
	p := &Pool{Address: addr, Hold: 10 * time.Second, Logger: slog.New(slog.NewTextHandler(&log, nil))}
	defer p.Close()
	ch := getAsync(context.Background(), p)
	expectBlocked(t, ch)
	require.Eventually(t, func() bool { return p.HoldStats().Holding == 1 }, 5*time.Second, time.Millisecond)
	u := startUp()
	up := time.Now()
	r := waitResult(t, ch)
	require.NoError(t, r.err)
	assert.Less(t, time.Since(up), 2*time.Second, "released long after the upstream listened")
	mustRoundTrip(t, r.c, "conn 2") // the probe's was the first
	p.Put(r.c)
	st := p.HoldStats()
	assert.Equal(t, HoldStats{Held: 1, Released: 1, HeldTime: st.HeldTime}, st)
	assert.Positive(t, st.HeldTime)
	assert.Equal(t, int32(2), u.accepted.Load(), "the probe's and the request's")
	assert.Contains(t, log.String(), "holding new requests")
	assert.Contains(t, log.String(), "answers again")
}

// Down longer than Hold: the request fails with ErrDial at the bound, not
// before and not long after, and the probe goroutine ends with the pool.
func TestHoldTimeout(t *testing.T) {
	testsupport.CheckGoroutines(t)
	addr, _ := downAddr(t)
	p := &Pool{Address: addr, Hold: 300 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)}
	defer p.Close()
	start := time.Now()
	_, _, err := p.Get(context.Background())
	took := time.Since(start)
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrDial)
	assert.ErrorIs(t, err, ErrHoldTimeout)
	assert.GreaterOrEqual(t, took, 300*time.Millisecond)
	assert.Less(t, took, 3*time.Second)
	st := p.HoldStats()
	assert.Equal(t, uint64(1), st.TimedOut)
	assert.True(t, st.Down)
	assert.Equal(t, 0, p.Stats().Open, "a held request holds no slot")
}

// A full hold queue answers at once.
func TestHoldFull(t *testing.T) {
	testsupport.CheckGoroutines(t)
	addr, start := downAddr(t)
	p := &Pool{Address: addr, Hold: 10 * time.Second, HoldMax: 2, Logger: slog.New(slog.DiscardHandler)}
	defer p.Close()
	a, b := getAsync(context.Background(), p), getAsync(context.Background(), p)
	require.Eventually(t, func() bool { return p.HoldStats().Holding == 2 }, 5*time.Second, time.Millisecond)
	t0 := time.Now()
	_, _, err := p.Get(context.Background())
	assert.ErrorIs(t, err, ErrHoldFull)
	assert.Less(t, time.Since(t0), time.Second)
	assert.Equal(t, uint64(1), p.HoldStats().Rejected)
	start()
	for _, ch := range []<-chan getResult{a, b} {
		r := waitResult(t, ch)
		require.NoError(t, r.err)
		p.Put(r.c)
	}
}

// Without Hold a refused dial fails at once, as before.
func TestHoldOff(t *testing.T) {
	addr, _ := downAddr(t)
	p := &Pool{Address: addr}
	defer p.Close()
	start := time.Now()
	_, _, err := p.Get(context.Background())
	assert.ErrorIs(t, err, ErrDial)
	assert.NotErrorIs(t, err, ErrHoldTimeout)
	assert.Less(t, time.Since(start), time.Second)
	assert.Zero(t, p.HoldStats().Held)
}

// The request's own context ends a hold: an aborted request leaves.
func TestHoldContext(t *testing.T) {
	testsupport.CheckGoroutines(t)
	addr, _ := downAddr(t)
	p := &Pool{Address: addr, Hold: 10 * time.Second, Logger: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	ch := getAsync(ctx, p)
	require.Eventually(t, func() bool { return p.HoldStats().Holding == 1 }, 5*time.Second, time.Millisecond)
	cancel()
	r := waitResult(t, ch)
	assert.ErrorIs(t, r.err, context.Canceled)
	assert.Zero(t, p.HoldStats().Holding)
	p.Close()
}

// Close releases held requests at once, with ErrPoolClosed.
func TestHoldClose(t *testing.T) {
	testsupport.CheckGoroutines(t)
	addr, _ := downAddr(t)
	p := &Pool{Address: addr, Hold: 10 * time.Second, Logger: slog.New(slog.DiscardHandler)}
	ch := getAsync(context.Background(), p)
	require.Eventually(t, func() bool { return p.HoldStats().Holding == 1 }, 5*time.Second, time.Millisecond)
	p.Close()
	r := waitResult(t, ch)
	assert.ErrorIs(t, r.err, ErrPoolClosed)
}

// Only refusals hold: an error that says something else is wrong fails
// the request at once.
func TestHoldOnlyRefusals(t *testing.T) {
	p := &Pool{Address: "127.0.0.1:1", Hold: 10 * time.Second,
		Dial: func(context.Context, string, string) (net.Conn, error) {
			return nil, errors.New("permission denied")
		}}
	defer p.Close()
	start := time.Now()
	_, _, err := p.Get(context.Background())
	assert.ErrorIs(t, err, ErrDial)
	assert.True(t, strings.Contains(err.Error(), "permission denied"), "%v", err)
	assert.Less(t, time.Since(start), time.Second)
	assert.False(t, p.HoldStats().Down)
}

// A health check does not hold: under WithoutHold a down pool fails at
// once, whether this dial or an earlier one found it down.
func TestHoldWithout(t *testing.T) {
	testsupport.CheckGoroutines(t)
	addr, _ := downAddr(t)
	p := &Pool{Address: addr, Hold: 10 * time.Second, Logger: slog.New(slog.DiscardHandler)}
	defer p.Close()
	ctx := WithoutHold(context.Background())
	start := time.Now()
	_, err := p.Fresh(ctx)
	assert.ErrorIs(t, err, ErrDial)
	ch := getAsync(context.Background(), p)
	require.Eventually(t, func() bool { return p.HoldStats().Holding == 1 }, 5*time.Second, time.Millisecond)
	_, _, err = p.Get(ctx)
	assert.ErrorIs(t, err, ErrDial)
	assert.Less(t, time.Since(start), 2*time.Second)
	p.Close()
	assert.ErrorIs(t, waitResult(t, ch).err, ErrPoolClosed)
}

// A php-fpm that accepts connections but resets them (stopping: its
// master still has the socket, its workers are gone) is down: Suspect
// holds new requests, and the probe releases them only once an answer
// comes.
func TestHoldSuspect(t *testing.T) {
	testsupport.CheckGoroutines(t)
	addr, startUp := downAddr(t)
	path := strings.TrimPrefix(addr, "unix:")
	l, err := net.Listen("unix", path)
	require.NoError(t, err)
	resets := make(chan struct{})
	go func() {
		defer close(resets)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.(*net.UnixConn).CloseRead()
			c.Close()
		}
	}()
	p := &Pool{Address: addr, Hold: 10 * time.Second, Logger: slog.New(slog.DiscardHandler)}
	defer p.Close()
	assert.False(t, (&Pool{Address: addr}).Suspect(errors.New("reset")), "without Hold, nothing to wait for")
	require.True(t, p.Suspect(errors.New("connection reset by peer")))
	ch := getAsync(context.Background(), p)
	expectBlocked(t, ch)
	time.Sleep(100 * time.Millisecond)
	expectBlocked(t, ch) // the probe connects, but no answer comes
	l.Close()
	<-resets
	startUp()
	r := waitResult(t, ch)
	require.NoError(t, r.err)
	p.Put(r.c)
	assert.Equal(t, uint64(1), p.HoldStats().Released)
}
