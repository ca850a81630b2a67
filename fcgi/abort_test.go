package fcgi

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/incpathd/incpathd/internal/testsupport"
)

// The watch for aborts starts after AbortWatchDelay, at once when it is
// negative; either way an abort or a hang-up while the handler runs is seen.
func TestServerAbortWatchDelay(t *testing.T) {
	for _, tt := range []struct {
		name  string
		delay time.Duration
	}{{"at once", -1}, {"default", 0}, {"50ms", 50 * time.Millisecond}} {
		t.Run(tt.name, func(t *testing.T) {
			testsupport.CheckGoroutines(t)
			started := make(chan struct{}, 1)
			causes := make(chan error, 1)
			ts := startServer(t, "tcp", &Server{Handler: waitHandler(started, causes, false), AbortWatchDelay: tt.delay})

			c := ts.dial(t)
			c.send(request(1, FlagKeepConn, nil, ""))
			<-started
			c.send(rec(TypeAbortRequest, 1, nil, 0))
			assert.Equal(t, ErrAborted, <-causes)
			assert.Equal(t, EndRequest{0, StatusRequestComplete}, c.response(1).end)

			c = ts.dial(t)
			c.send(request(1, FlagKeepConn, nil, ""))
			<-started
			c.nc.Close()
			assert.ErrorIs(t, <-causes, ErrClientGone)
		})
	}
}

// OnAbort runs its function when the web server aborts, once; OnAbort(nil)
// removes it; a function set after the abort runs at once.
func TestRequestOnAbort(t *testing.T) {
	testsupport.CheckGoroutines(t)
	type result struct {
		calls, lateCalls, removedCalls int32
		cause                          error
	}
	got := make(chan result, 1)
	// The abort is sent only once both functions are set: sent earlier, on
	// a loaded machine it could reach the first one before the handler
	// replaced it, and the test would judge the scheduler, not OnAbort.
	set := make(chan struct{})
	ts := startServer(t, "tcp", &Server{AbortWatchDelay: -1, Handler: HandlerFunc(func(w *ResponseWriter, r *Request) {
		var res result
		var calls, removed atomic.Int32
		aborted := make(chan struct{})
		r.OnAbort(func() { removed.Add(1) })
		r.OnAbort(func() { // replaces the first
			if calls.Add(1) == 1 {
				close(aborted)
			}
		})
		close(set)
		select {
		case <-aborted:
		case <-time.After(5 * time.Second):
		}
		r.OnAbort(nil)
		res.calls, res.removedCalls = calls.Load(), removed.Load()
		var late atomic.Int32
		r.OnAbort(func() { late.Add(1) })
		res.lateCalls = late.Load()
		// The context is made after the abort: it is canceled already.
		res.cause = context.Cause(r.Context())
		got <- res
	})})
	c := ts.dial(t)
	c.send(request(1, FlagKeepConn, nil, ""))
	<-set
	c.send(rec(TypeAbortRequest, 1, nil, 0))
	res := <-got
	assert.Equal(t, result{calls: 1, lateCalls: 1, cause: ErrAborted}, res)
	c.response(1)
}

// A request that ends normally never calls its OnAbort function, and its
// context, once made, is canceled when the handler returns.
func TestRequestEndsWithoutAbort(t *testing.T) {
	testsupport.CheckGoroutines(t)
	ctxs := make(chan context.Context, 1)
	var calls atomic.Int32
	ts := startServer(t, "tcp", &Server{Handler: HandlerFunc(func(w *ResponseWriter, r *Request) {
		r.OnAbort(func() { calls.Add(1) })
		ctxs <- r.Context()
		w.Write([]byte("ok"))
	})})
	c := ts.dial(t)
	for range 3 {
		c.send(request(1, FlagKeepConn, nil, ""))
		assert.Equal(t, "ok", c.response(1).stdout)
		ctx := <-ctxs
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("context not canceled after the handler returned")
		}
		assert.Equal(t, context.Canceled, context.Cause(ctx), "no abort, only the end")
	}
	assert.Zero(t, calls.Load())
}

// The watch starts between half AbortWatchDelay and all of it after the
// request was armed (the server's sweeper ticks every half delay and starts
// a request seen armed on two ticks in a row), and the sweeper ends once no
// request is armed.
func TestServerAbortWatchSweeper(t *testing.T) {
	testsupport.CheckGoroutines(t)
	const delay = 200 * time.Millisecond
	started := make(chan struct{}, 1)
	causes := make(chan error, 1)
	ts := startServer(t, "tcp", &Server{Handler: waitHandler(started, causes, false), AbortWatchDelay: delay})
	c := ts.dial(t)
	begin := time.Now()
	c.send(request(1, FlagKeepConn, nil, ""))
	<-started
	c.send(rec(TypeAbortRequest, 1, nil, 0))
	assert.Equal(t, ErrAborted, <-causes)
	took := time.Since(begin)
	assert.GreaterOrEqual(t, took, delay/2, "the watch started before half the delay")
	// Generous: a loaded machine runs tickers late.
	assert.Less(t, took, 10*delay)
	c.response(1)
	assert.True(t, testsupport.Eventually(5*time.Second, func() bool { return !ts.sweeping.Load() }),
		"the sweeper still runs with no request armed")
}
