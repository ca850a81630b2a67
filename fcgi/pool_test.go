package fcgi

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/internal/testsupport"
)

// fakeUpstream plays php-fpm: it answers every request on a connection with
// "conn N", N counting connections from 1, and keeps the connection open.
type fakeUpstream struct {
	network, addr string
	l             net.Listener

	accepted atomic.Int32
	closed   atomic.Int32 // connections the pool closed
	stray    atomic.Bool  // write junk after END_REQUEST

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func startUpstream(t testing.TB, network string) *fakeUpstream {
	t.Helper()
	u := &fakeUpstream{network: network}
	var err error
	if network == "unix" {
		u.l, err = net.Listen("unix", filepath.Join(t.TempDir(), "fpm.sock"))
	} else {
		u.l, err = net.Listen("tcp", "127.0.0.1:0")
	}
	require.NoError(t, err)
	u.addr = u.l.Addr().String()
	u.wg.Add(1)
	go u.accept()
	t.Cleanup(func() {
		u.l.Close()
		u.closeConns()
		u.wg.Wait()
	})
	return u
}

// address is the upstream as Pool.Address spells it.
func (u *fakeUpstream) address() string {
	if u.network == "unix" {
		return "unix:" + u.addr
	}
	return u.addr
}

func (u *fakeUpstream) accept() {
	defer u.wg.Done()
	for {
		nc, err := u.l.Accept()
		if err != nil {
			return
		}
		n := u.accepted.Add(1)
		u.mu.Lock()
		u.conns = append(u.conns, nc)
		u.mu.Unlock()
		u.wg.Add(1)
		go u.serve(nc, n)
	}
}

func (u *fakeUpstream) serve(nc net.Conn, n int32) {
	defer u.wg.Done()
	r := bufio.NewReader(nc)
	for {
		rr, err := readRaw(r)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				u.closed.Add(1)
			}
			nc.Close()
			return
		}
		if rr.Type == TypeGetValues { // the hold's probe
			nc.Write(rec(TypeGetValuesResult, 0, AppendPair(nil, Pair{"FCGI_MPXS_CONNS", "0"}), 0))
			continue
		}
		if rr.Type != TypeStdin || len(rr.Content) > 0 {
			continue
		}
		out := cat(rec(TypeStdout, rr.ID, fmt.Appendf(nil, "conn %d", n), 0), rec(TypeStdout, rr.ID, nil, 0),
			rec(TypeEndRequest, rr.ID, make([]byte, 8), 0))
		if u.stray.Load() {
			out = append(out, "junk"...)
		}
		nc.Write(out)
	}
}

// closeConns closes the upstream side of every connection, as php-fpm does
// when it recycles its workers.
func (u *fakeUpstream) closeConns() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, nc := range u.conns {
		nc.Close()
	}
	u.conns = nil
}

// roundTrip runs one request on c and returns the upstream's answer.
func roundTrip(c *Conn) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out Collector
	call := Call{KeepConn: true, Params: []Pair{{"SCRIPT_FILENAME", "/index.php"}}, Logger: quiet}
	_, err := c.RoundTrip(ctx, &call, &out)
	return string(out.Stdout), err
}

// quiet is a logger for tests whose upstream misbehaves on purpose.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func mustGet(t *testing.T, p *Pool) (*Conn, bool) {
	t.Helper()
	c, reused, err := p.Get(context.Background())
	require.NoError(t, err)
	return c, reused
}

func mustRoundTrip(t *testing.T, c *Conn, want string) {
	t.Helper()
	got, err := roundTrip(c)
	require.NoError(t, err)
	if got != want {
		t.Errorf("got %q; want %q", got, want)
	}
}

// getAsync runs Get on another goroutine.
type getResult struct {
	c      *Conn
	reused bool
	err    error
}

func getAsync(ctx context.Context, p *Pool) <-chan getResult {
	ch := make(chan getResult, 1)
	go func() {
		c, reused, err := p.Get(ctx)
		ch <- getResult{c, reused, err}
	}()
	return ch
}

func waitResult(t *testing.T, ch <-chan getResult) getResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("Get did not return")
		return getResult{}
	}
}

func expectBlocked(t *testing.T, ch <-chan getResult) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("Get returned %+v; want it to wait", r)
	case <-time.After(50 * time.Millisecond):
	}
}

// busyPool is a pool of one connection with WaitTimeout wait (0: the
// default), and that connection, taken: the next Get waits. The test's
// goroutines are checked, and the pool is closed at its end.
func busyPool(t *testing.T, wait time.Duration) (*Pool, *Conn) {
	t.Helper()
	testsupport.CheckGoroutines(t)
	u := startUpstream(t, "tcp")
	p := &Pool{Address: u.address(), MaxConns: 1, WaitTimeout: wait}
	t.Cleanup(func() { p.Close() })
	c, _ := mustGet(t, p)
	return p, c
}

// numWaiters is how many Gets wait for a connection.
func (p *Pool) numWaiters() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.waiters)
}

func TestPoolReuseMostRecent(t *testing.T) {
	testsupport.CheckGoroutines(t)
	u := startUpstream(t, "tcp")
	p := &Pool{Address: u.address()}
	defer p.Close()

	a, reused := mustGet(t, p)
	assert.False(t, reused)
	b, reused := mustGet(t, p)
	assert.False(t, reused)
	mustRoundTrip(t, a, "conn 1")
	mustRoundTrip(t, b, "conn 2")
	p.Put(a)
	p.Put(b)
	assert.Equal(t, PoolStats{Dials: 2, Open: 2, Idle: 2}, p.Stats())

	c, reused := mustGet(t, p)
	assert.True(t, reused)
	assert.Same(t, b, c, "most recently used first")
	mustRoundTrip(t, c, "conn 2")
	d, _ := mustGet(t, p)
	assert.Same(t, a, d)
	mustRoundTrip(t, d, "conn 1")
	assert.Equal(t, PoolStats{Dials: 2, Reused: 2, Open: 2}, p.Stats())
	p.Put(d)
	p.Put(c)
	e, _ := mustGet(t, p)
	assert.Same(t, b, e)
	p.Put(e)
	assert.Equal(t, int32(2), u.accepted.Load())
}

func TestPoolUnixSocket(t *testing.T) {
	testsupport.CheckGoroutines(t)
	u := startUpstream(t, "unix")
	var network, addr string
	p := &Pool{Address: u.address(), Dial: func(ctx context.Context, n, a string) (net.Conn, error) {
		network, addr = n, a
		var d net.Dialer
		return d.DialContext(ctx, n, a)
	}}
	defer p.Close()
	c, _ := mustGet(t, p)
	assert.Equal(t, "unix", network)
	assert.Equal(t, u.addr, addr)
	mustRoundTrip(t, c, "conn 1")
	p.Put(c)
	c, reused := mustGet(t, p)
	assert.True(t, reused, "liveness check on a unix socket")
	mustRoundTrip(t, c, "conn 1")
	p.Put(c)
}

func TestPoolMaxConnsWaits(t *testing.T) {
	testsupport.CheckGoroutines(t)
	u := startUpstream(t, "tcp")
	p := &Pool{Address: u.address(), MaxConns: 2}
	defer p.Close()
	a, _ := mustGet(t, p)
	b, _ := mustGet(t, p)
	third := getAsync(context.Background(), p)
	expectBlocked(t, third)
	assert.Equal(t, 1, p.numWaiters())
	mustRoundTrip(t, a, "conn 1")
	p.Put(a)
	r := waitResult(t, third)
	require.NoError(t, r.err)
	assert.Same(t, a, r.c, "the waiter gets the connection given back")
	assert.True(t, r.reused)
	mustRoundTrip(t, r.c, "conn 1")
	assert.Equal(t, int32(2), u.accepted.Load(), "never more than MaxConns")
	assert.Equal(t, PoolStats{Dials: 2, Reused: 1, Open: 2}, p.Stats())
	p.Put(r.c)
	p.Put(b)
}

func TestPoolWaitTimeout(t *testing.T) {
	p, a := busyPool(t, 50*time.Millisecond)
	start := time.Now()
	_, _, err := p.Get(context.Background())
	assert.ErrorIs(t, err, ErrPoolTimeout)
	assert.GreaterOrEqual(t, time.Since(start), 50*time.Millisecond)
	assert.Equal(t, uint64(1), p.Stats().Timeouts)
	assert.Zero(t, p.numWaiters())
	// The connection goes back to the pool, not to the waiter that left.
	p.Put(a)
	assert.Equal(t, 1, p.Stats().Idle)
	b, reused := mustGet(t, p)
	assert.Same(t, a, b)
	assert.True(t, reused)
	p.Put(b)
}

func TestPoolWaitContext(t *testing.T) {
	p, a := busyPool(t, 0)
	errGone := errors.New("client gone")
	ctx, cancel := context.WithCancelCause(context.Background())
	ch := getAsync(ctx, p)
	expectBlocked(t, ch)
	cancel(errGone)
	r := waitResult(t, ch)
	assert.ErrorIs(t, r.err, errGone)
	assert.Zero(t, p.Stats().Timeouts, "a canceled wait is not a timeout")
	assert.Zero(t, p.numWaiters())
	p.Put(a)
	assert.Equal(t, PoolStats{Dials: 1, Open: 1, Idle: 1}, p.Stats())
}

// abortContext is a request's context as the proxy passes it: an Aborter
// whose Done must not be called, since calling it would make a context.
type abortContext struct {
	context.Context // for the cause
	t               *testing.T
	mu              sync.Mutex
	f               func()
}

func (c *abortContext) Done() <-chan struct{} {
	c.t.Error("Done called on an Aborter")
	return c.Context.Done()
}

func (c *abortContext) OnAbort(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.f = f
}

func (c *abortContext) fire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.f != nil {
		c.f()
	}
}

func (c *abortContext) registered() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.f != nil
}

// A wait for a free connection under a ctx that is an Aborter ends on its
// abort, with the context's cause, and unregisters itself.
func TestPoolWaitEndsOnAbort(t *testing.T) {
	p, a := busyPool(t, 0)
	errGone := errors.New("client gone")
	inner, cancel := context.WithCancelCause(context.Background())
	ctx := &abortContext{Context: inner, t: t}
	ch := getAsync(ctx, p)
	expectBlocked(t, ch)
	assert.True(t, ctx.registered(), "the wait listens for the abort")
	cancel(errGone)
	ctx.fire()
	r := waitResult(t, ch)
	assert.ErrorIs(t, r.err, errGone)
	assert.False(t, ctx.registered(), "the wait left its abort function behind")
	assert.Zero(t, p.numWaiters())
	assert.Zero(t, p.Stats().Timeouts)
	// The waiter is reused: an abort left in it must not end the next wait.
	ch = getAsync(&abortContext{Context: context.Background(), t: t}, p)
	expectBlocked(t, ch)
	p.Put(a)
	r = waitResult(t, ch)
	require.NoError(t, r.err)
	assert.Same(t, a, r.c)
	p.Put(r.c)
}

// One timer serves the queue: each waiter still times out WaitTimeout after
// it began waiting, in order, and the timer runs again for later waits.
func TestPoolWaitersTimeOutInOrder(t *testing.T) {
	const wait = 100 * time.Millisecond
	p, a := busyPool(t, wait)
	timed := func() <-chan time.Duration {
		ch := make(chan time.Duration, 1)
		go func() {
			start := time.Now()
			_, _, err := p.Get(context.Background())
			assert.ErrorIs(t, err, ErrPoolTimeout)
			ch <- time.Since(start)
		}()
		return ch
	}
	first := timed()
	time.Sleep(wait / 2)
	second := timed()
	d1 := <-first
	assert.GreaterOrEqual(t, d1, wait)
	assert.Equal(t, 1, p.numWaiters(), "the second waiter times out on its own deadline, not the first's")
	d2 := <-second
	assert.GreaterOrEqual(t, d2, wait)
	assert.Equal(t, uint64(2), p.Stats().Timeouts)
	// The queue was empty: a new wait arms the timer again.
	assert.GreaterOrEqual(t, <-timed(), wait)
	assert.Equal(t, uint64(3), p.Stats().Timeouts)
	p.Put(a)
	assert.Equal(t, 1, p.Stats().Idle, "a timed-out waiter takes no connection")
}

// The wait timer is not moved when a waiter joins an empty queue while it
// runs for an earlier one that got a connection: it fires for nothing, and
// the new waiter still times out on its own deadline, not that one's.
func TestPoolWaitTimerLeftArmed(t *testing.T) {
	const wait = 200 * time.Millisecond
	p, a := busyPool(t, wait)
	served := getAsync(context.Background(), p) // arms the timer
	require.True(t, testsupport.Eventually(5*time.Second, func() bool { return p.numWaiters() == 1 }), "the first Get waits")
	p.Put(a)
	first := waitResult(t, served)
	require.NoError(t, first.err)
	time.Sleep(wait / 2)
	start := time.Now()
	late := getAsync(context.Background(), p) // the timer runs for the first
	r := waitResult(t, late)
	assert.ErrorIs(t, r.err, ErrPoolTimeout)
	assert.GreaterOrEqual(t, time.Since(start), wait, "timed out on the first waiter's deadline")
	assert.Equal(t, uint64(1), p.Stats().Timeouts)
	p.Put(first.c)
}

func TestPoolDiscardWakesWaiter(t *testing.T) {
	testsupport.CheckGoroutines(t)
	u := startUpstream(t, "tcp")
	p := &Pool{Address: u.address(), MaxConns: 1}
	defer p.Close()
	a, _ := mustGet(t, p)
	ch := getAsync(context.Background(), p)
	expectBlocked(t, ch)
	p.Discard(a)
	r := waitResult(t, ch)
	require.NoError(t, r.err)
	assert.NotSame(t, a, r.c)
	assert.False(t, r.reused, "the waiter dials into the freed slot")
	mustRoundTrip(t, r.c, "conn 2")
	assert.True(t, testsupport.Eventually(time.Second, func() bool { return u.closed.Load() == 1 }), "discarded connection not closed")
	assert.Equal(t, PoolStats{Dials: 2, Open: 1}, p.Stats())
	p.Discard(r.c)
	assert.Equal(t, PoolStats{Dials: 2}, p.Stats())
}

func TestPoolDialError(t *testing.T) {
	testsupport.CheckGoroutines(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	l.Close()

	p := &Pool{Address: addr, MaxConns: 1}
	defer p.Close()
	_, _, err = p.Get(context.Background())
	assert.ErrorIs(t, err, ErrDial)
	assert.ErrorIs(t, err, syscall.ECONNREFUSED)
	assert.Contains(t, err.Error(), addr)
	assert.Equal(t, PoolStats{Dials: 1, DialErrors: 1}, p.Stats(), "the slot is given back")
	_, _, err = p.Get(context.Background())
	assert.ErrorIs(t, err, ErrDial, "a second Get dials again")

	// The Dial hook gets a deadline.
	errNope := errors.New("nope")
	p2 := &Pool{Address: "10.0.0.1:9000", DialTimeout: time.Minute, Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		d, ok := ctx.Deadline()
		if !ok || time.Until(d) > time.Minute {
			return nil, fmt.Errorf("deadline %v %v", d, ok)
		}
		return nil, errNope
	}}
	defer p2.Close()
	_, _, err = p2.Get(context.Background())
	assert.ErrorIs(t, err, ErrDial)
	assert.ErrorIs(t, err, errNope)
}

func TestPoolDialErrorWaiter(t *testing.T) {
	testsupport.CheckGoroutines(t)
	u := startUpstream(t, "tcp")
	var fail atomic.Bool
	p := &Pool{Address: u.address(), MaxConns: 1, Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		if fail.Load() {
			return nil, errors.New("refused")
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	defer p.Close()
	a, _ := mustGet(t, p)
	ch := getAsync(context.Background(), p)
	expectBlocked(t, ch)
	fail.Store(true)
	p.Discard(a)
	r := waitResult(t, ch)
	assert.ErrorIs(t, r.err, ErrDial)
	assert.Equal(t, PoolStats{Dials: 2, DialErrors: 1}, p.Stats())
	fail.Store(false)
	b, _ := mustGet(t, p)
	mustRoundTrip(t, b, "conn 2")
	p.Put(b)
}

func TestPoolStaleConn(t *testing.T) {
	testsupport.CheckGoroutines(t)
	u := startUpstream(t, "tcp")
	p := &Pool{Address: u.address()}
	defer p.Close()
	a, _ := mustGet(t, p)
	mustRoundTrip(t, a, "conn 1")
	assert.True(t, a.alive(), "a connection in step is alive")
	// php-fpm recycles the worker after END_REQUEST.
	u.closeConns()
	require.True(t, testsupport.Eventually(time.Second, func() bool { return !a.alive() }), "closed connection still looks alive")
	p.Put(a)
	b, reused := mustGet(t, p)
	assert.NotSame(t, a, b)
	assert.False(t, reused)
	mustRoundTrip(t, b, "conn 2")
	assert.Equal(t, PoolStats{Dials: 2, Stale: 1, Open: 1}, p.Stats())
	p.Put(b)
}

func TestPoolStrayBytes(t *testing.T) {
	testsupport.CheckGoroutines(t)
	u := startUpstream(t, "tcp")
	u.stray.Store(true)
	p := &Pool{Address: u.address()}
	defer p.Close()
	a, _ := mustGet(t, p)
	mustRoundTrip(t, a, "conn 1")
	require.True(t, testsupport.Eventually(time.Second, func() bool { return !a.alive() }), "connection out of step looks alive")
	p.Put(a)
	b, reused := mustGet(t, p)
	assert.False(t, reused)
	assert.NotSame(t, a, b)
	// Closed by Put if the stray bytes were read with the answer, else by
	// the check before reuse.
	st := p.Stats()
	assert.Equal(t, uint64(1), st.Stale+st.OutOfStep, "%+v", st)
	p.Put(b)
}

// A connection given back with an expired deadline (a caller that cut a
// read short as the request ended) is still a good connection.
func TestPoolPutClearsDeadline(t *testing.T) {
	testsupport.CheckGoroutines(t)
	u := startUpstream(t, "tcp")
	p := &Pool{Address: u.address()}
	defer p.Close()
	a, _ := mustGet(t, p)
	mustRoundTrip(t, a, "conn 1")
	a.NetConn().SetDeadline(time.Unix(1, 0))
	p.Put(a)
	b, reused := mustGet(t, p)
	assert.Same(t, a, b)
	assert.True(t, reused)
	assert.Zero(t, p.Stats().Stale)
	mustRoundTrip(t, b, "conn 1")
	p.Put(b)
}

func TestPoolIdlePrune(t *testing.T) {
	testsupport.CheckGoroutines(t)
	u := startUpstream(t, "tcp")
	p := &Pool{Address: u.address(), IdleTimeout: 30 * time.Millisecond}
	defer p.Close()
	a, _ := mustGet(t, p)
	b, _ := mustGet(t, p)
	p.Put(a)
	p.Put(b)
	assert.True(t, testsupport.Eventually(2*time.Second, func() bool { return p.Stats().Open == 0 }), "stats: %+v", p.Stats())
	assert.Equal(t, PoolStats{Dials: 2}, p.Stats())
	assert.True(t, testsupport.Eventually(time.Second, func() bool { return u.closed.Load() == 2 }), "upstream saw %d closed", u.closed.Load())
	// The pool goes on after a prune.
	c, reused := mustGet(t, p)
	assert.False(t, reused)
	mustRoundTrip(t, c, "conn 3")
	p.Put(c)
	assert.True(t, testsupport.Eventually(2*time.Second, func() bool { return p.Stats().Open == 0 }), "stats: %+v", p.Stats())
}

func TestPoolPruneOldestOnly(t *testing.T) {
	testsupport.CheckGoroutines(t)
	u := startUpstream(t, "tcp")
	p := &Pool{Address: u.address(), IdleTimeout: time.Hour}
	defer p.Close()
	a, _ := mustGet(t, p)
	b, _ := mustGet(t, p)
	p.Put(a)
	p.Put(b)
	p.mu.Lock()
	p.idle[0].used = ticks() - int64(2*time.Hour)
	p.mu.Unlock()
	p.prune()
	assert.Equal(t, PoolStats{Dials: 2, Open: 1, Idle: 1}, p.Stats())
	c, _ := mustGet(t, p)
	assert.Same(t, b, c)
	mustRoundTrip(t, c, "conn 2")
	p.Put(c)
}

func TestPoolClose(t *testing.T) {
	testsupport.CheckGoroutines(t)
	u := startUpstream(t, "tcp")
	p := &Pool{Address: u.address(), MaxConns: 2}
	a, _ := mustGet(t, p)
	b, _ := mustGet(t, p)
	ch := getAsync(context.Background(), p)
	expectBlocked(t, ch)
	require.NoError(t, p.Close())
	r := waitResult(t, ch)
	assert.ErrorIs(t, r.err, ErrPoolClosed, "waiters are woken")
	_, _, err := p.Get(context.Background())
	assert.ErrorIs(t, err, ErrPoolClosed)
	assert.Equal(t, 2, p.Stats().Open, "busy connections stay open until given back")

	p.Put(a) // closed, not kept
	p.Discard(b)
	assert.Equal(t, PoolStats{Dials: 2}, p.Stats())
	assert.True(t, testsupport.Eventually(time.Second, func() bool { return u.closed.Load() == 2 }), "upstream saw %d closed", u.closed.Load())
	require.NoError(t, p.Close(), "Close twice")
}

func TestPoolCloseIdle(t *testing.T) {
	testsupport.CheckGoroutines(t)
	u := startUpstream(t, "tcp")
	p := &Pool{Address: u.address()}
	a, _ := mustGet(t, p)
	b, _ := mustGet(t, p)
	p.Put(a)
	p.Put(b)
	require.NoError(t, p.Close())
	assert.Equal(t, PoolStats{Dials: 2}, p.Stats())
	assert.True(t, testsupport.Eventually(time.Second, func() bool { return u.closed.Load() == 2 }), "upstream saw %d closed", u.closed.Load())
}

// Many requests over few connections; run with -race.
func TestPoolConcurrent(t *testing.T) {
	for _, discard := range []bool{false, true} {
		t.Run(fmt.Sprintf("discard=%v", discard), func(t *testing.T) {
			testsupport.CheckGoroutines(t)
			u := startUpstream(t, "tcp")
			const maxConns, workers, iterations = 3, 16, 30
			p := &Pool{Address: u.address(), MaxConns: maxConns}
			defer p.Close()
			var wg sync.WaitGroup
			errs := make(chan error, workers)
			for w := range workers {
				wg.Go(func() {
					for i := range iterations {
						c, _, err := p.Get(context.Background())
						if err != nil {
							errs <- err
							return
						}
						if s := p.Stats(); s.Open > maxConns {
							errs <- fmt.Errorf("%d open; want at most %d", s.Open, maxConns)
						}
						if _, err := roundTrip(c); err != nil {
							errs <- err
							p.Discard(c)
							return
						}
						if discard && (w+i)%5 == 0 {
							p.Discard(c)
						} else {
							p.Put(c)
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			s := p.Stats()
			assert.Equal(t, uint64(workers*iterations), s.Dials+s.Reused, "every Get dialed or reused: %+v", s)
			assert.Equal(t, s.Open, s.Idle)
			if !discard {
				assert.LessOrEqual(t, u.accepted.Load(), int32(maxConns))
			}
		})
	}
}

// Many requests over few connections, a third of them aborted at some
// moment of their wait, as a web server's aborts come: an abort ends only
// its own wait, and no connection or slot is lost to one that raced a
// handoff. Run with -race.
func TestPoolConcurrentAborts(t *testing.T) {
	testsupport.CheckGoroutines(t)
	u := startUpstream(t, "tcp")
	const maxConns, workers, iterations = 2, 16, 40
	p := &Pool{Address: u.address(), MaxConns: maxConns}
	defer p.Close()
	// Both connections dialed first: every Get then takes one or waits,
	// and none dials, which would call the Aborter's Done.
	a, _ := mustGet(t, p)
	b, _ := mustGet(t, p)
	p.Put(a)
	p.Put(b)
	errGone := errors.New("client gone")
	var wg, fires sync.WaitGroup
	var got, aborted atomic.Int64
	for w := range workers {
		wg.Go(func() {
			for i := range iterations {
				inner, cancel := context.WithCancelCause(context.Background())
				ctx := &abortContext{Context: inner, t: t}
				if (w+i)%3 == 0 {
					fires.Go(func() {
						time.Sleep(time.Duration((w*iterations+i)%7) * 50 * time.Microsecond)
						cancel(errGone)
						ctx.fire()
					})
				}
				c, _, err := p.Get(ctx)
				cancel(nil) // an abort that came first keeps its cause
				if err != nil {
					assert.ErrorIs(t, err, errGone)
					aborted.Add(1)
					continue
				}
				got.Add(1)
				if _, err := roundTrip(c); err != nil {
					t.Error(err)
					p.Discard(c)
					continue
				}
				p.Put(c)
			}
		})
	}
	wg.Wait()
	fires.Wait()
	s := p.Stats()
	assert.Equal(t, uint64(maxConns), s.Dials)
	assert.Equal(t, uint64(got.Load()), s.Reused, "every Get that returned a connection reused one: %+v", s)
	assert.Equal(t, int64(workers*iterations), got.Load()+aborted.Load())
	assert.Equal(t, s.Open, s.Idle, "a connection or slot was lost: %+v", s)
	assert.LessOrEqual(t, s.Open, maxConns)
	assert.Zero(t, p.numWaiters())
	t.Logf("%d got a connection, %d aborted", got.Load(), aborted.Load())
}

// Issue 10, item 9: request ids on a connection change with every request,
// and only the id of the request before counts as late; a connection that
// saw a late record is closed by Put, not kept.
func TestConnRequestIDs(t *testing.T) {
	testsupport.CheckGoroutines(t)
	u := startUpstream(t, "tcp")
	p := &Pool{Address: u.address()}
	defer p.Close()
	c, _ := mustGet(t, p)
	assert.Equal(t, uint16(1), c.NextID())
	assert.Equal(t, uint16(2), c.NextID())
	assert.False(t, c.Late(0), "id 0 is a management record, not a late one")
	assert.False(t, c.Late(2), "the request under way")
	assert.False(t, c.Late(7), "an id this connection never used")
	assert.False(t, c.OutOfStep())
	assert.True(t, c.Late(1))
	assert.True(t, c.OutOfStep())
	p.Put(c)
	st := p.Stats()
	assert.Equal(t, uint64(1), st.OutOfStep)
	assert.Zero(t, st.Idle, "kept a connection out of step")
	assert.Zero(t, st.Open)
}

// A request that waits for a busy pool's connection allocates nothing: with
// more web server connections than MaxConns, waiting is routine, and a
// channel and a timer per wait, then the request's context made to wait on,
// were a measurable part of a queued request's cost. The wait is under an
// Aborter, as the proxy's requests wait.
func TestPoolWaitAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("under the race detector, sync.Pool drops what it is given at random")
	}
	p, c := busyPool(t, 0)
	start := make(chan struct{})
	got := make(chan *Conn)
	failed := make(chan error, 1)
	go func() {
		defer close(got)
		ctx := &abortContext{Context: context.Background(), t: t}
		for range start {
			c, _, err := p.Get(ctx)
			if err != nil {
				failed <- err
				return
			}
			got <- c
		}
	}()
	cycle := func() {
		start <- struct{}{}
		for p.numWaiters() == 0 {
			runtime.Gosched()
		}
		p.Put(c)
		c = <-got
	}
	cycle() // the first waiter is made
	allocs := testing.AllocsPerRun(100, cycle)
	close(start)
	<-got
	select {
	case err := <-failed:
		t.Fatal(err)
	default:
	}
	require.NotNil(t, c)
	assert.Zero(t, allocs, "allocations per wait")
	p.Put(c)
}

// nopAborter is an Aborter that never fires.
type nopAborter struct{}

func (nopAborter) OnAbort(func()) {}

// Round trips on a kept connection set no deadline on it when nothing
// asked for one (a request with an Aborter, as the proxy sends them):
// clearing a deadline that is not there still goes through the runtime's
// poller, and RoundTrip and Put each did it on every request. After an
// abort's cut, the next request starts with no deadline.
func TestPoolNoDeadlinePerRequest(t *testing.T) {
	testsupport.CheckGoroutines(t)
	u := startUpstream(t, "tcp")
	var calls atomic.Int64
	p := &Pool{Address: u.address(), MaxConns: 1, Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		nc, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &countedConn{Conn: nc, calls: &calls}, nil
	}}
	defer p.Close()
	run := func() {
		t.Helper()
		c, _ := mustGet(t, p)
		var out Collector
		call := Call{KeepConn: true, Params: []Pair{{"SCRIPT_FILENAME", "/index.php"}}, Abort: nopAborter{}, Logger: quiet}
		_, err := c.RoundTrip(context.Background(), &call, &out)
		require.NoError(t, err)
		assert.Equal(t, "conn 1", string(out.Stdout))
		p.Put(c)
	}
	run() // the dialed connection's deadline is cleared once
	calls.Store(0)
	for range 100 {
		run()
	}
	assert.Zero(t, calls.Load(), "deadlines set over 100 round trips")

	// An abort's cut leaves a deadline in the past: Put clears it, so the
	// connection passes the liveness check and serves again ("conn 1").
	c, _ := mustGet(t, p)
	c.cut()
	p.Put(c)
	run()
}
