package fcgi

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/internal/testsupport"
)

// trickle sends b one byte at a time, every gap, until it is sent or the
// server closes the connection; it returns how many bytes went out.
func (c *testClient) trickle(b []byte, gap time.Duration) int {
	for i := range b {
		if _, err := c.nc.Write(b[i : i+1]); err != nil {
			return i
		}
		time.Sleep(gap)
	}
	return len(b)
}

// A slowloris web server connection that sends its request head one byte
// at a time, each byte well within ReadTimeout but the whole head slower
// than it, is closed: ReadTimeout bounds the request head from its first
// byte, so no connection can be held forever by trickling.
func TestServerSlowlorisHead(t *testing.T) {
	testsupport.CheckGoroutines(t)
	var calls atomic.Int32
	ts := startServer(t, "tcp", &Server{
		ReadTimeout: 300 * time.Millisecond,
		Handler:     HandlerFunc(func(w *ResponseWriter, r *Request) { calls.Add(1) }),
	})
	head := request(1, 0, []Pair{{"SCRIPT_FILENAME", "/srv/www/index.php"}, {"QUERY_STRING", strings.Repeat("q", 200)}}, "")
	for _, tt := range []struct {
		desc string
		head []byte
	}{
		{"begin request", head},
		// BEGIN_REQUEST at once, then the params trickle.
		{"params", head[HeaderLen+8:]},
	} {
		t.Run(tt.desc, func(t *testing.T) {
			c := ts.dial(t)
			if tt.desc == "params" {
				c.send(head[:HeaderLen+8])
			}
			start := time.Now()
			sent := c.trickle(tt.head, 10*time.Millisecond)
			took := time.Since(start)
			assert.Less(t, sent, len(tt.head), "the whole head went through in %v", took)
			// Generous: the point is that it ends, not when.
			assert.Less(t, took, 5*time.Second)
			c.expectClosed()
		})
	}
	assert.Zero(t, calls.Load(), "handler called for a request that never arrived whole")
	assert.Contains(t, ts.logs.String(), "timeout")
}

// An idle kept connection is closed after IdleTimeout, not ReadTimeout: the
// read timeout starts only with the first byte of a record.
func TestServerIdleThenRequest(t *testing.T) {
	testsupport.CheckGoroutines(t)
	ts := startServer(t, "tcp", &Server{ReadTimeout: 100 * time.Millisecond, IdleTimeout: 5 * time.Second, Handler: echo})
	c := ts.dial(t)
	time.Sleep(300 * time.Millisecond) // past ReadTimeout, within IdleTimeout
	c.send(request(1, FlagKeepConn, testPairs, ""))
	assert.Equal(t, testEcho+"body=\n", c.response(1).stdout)
}

func TestServerMaxParams(t *testing.T) {
	testsupport.CheckGoroutines(t)
	var calls atomic.Int32
	ts := startServer(t, "tcp", &Server{MaxParams: 3, Handler: HandlerFunc(func(w *ResponseWriter, r *Request) {
		calls.Add(1)
		echo(w, r)
	})})

	c := ts.dial(t)
	c.send(request(1, FlagKeepConn, testPairs, ""))
	assert.Equal(t, testEcho+"body=\n", c.response(1).stdout)

	c.send(request(2, FlagKeepConn, append(testPairs, Pair{"ONE", "more"}), ""))
	c.expectClosed()
	assert.Equal(t, int32(1), calls.Load(), "handler called for too many params")
	assert.True(t, testsupport.Eventually(time.Second, func() bool { return strings.Contains(ts.logs.String(), "more than 3 params") }),
		"log: got %q; want a line naming the limit", ts.logs.String())
}

// The default cap on params: a stream of empty pairs well within
// MaxParamsBytes is refused before the pairs are built.
func TestServerDefaultMaxParams(t *testing.T) {
	testsupport.CheckGoroutines(t)
	ts := startServer(t, "tcp", &Server{Handler: HandlerFunc(func(w *ResponseWriter, r *Request) {
		t.Errorf("handler called with %d params", len(r.Params))
	})})
	c := ts.dial(t)
	var content []byte
	for range 1001 {
		content = AppendPair(content, Pair{"A", ""})
	}
	c.send(beginRec(1, RoleResponder, 0), rec(TypeParams, 1, content, 0), rec(TypeParams, 1, nil, 0), rec(TypeStdin, 1, nil, 0))
	c.expectClosed()
	assert.True(t, testsupport.Eventually(time.Second, func() bool { return strings.Contains(ts.logs.String(), "more than 1000 params") }),
		"log: got %q", ts.logs.String())
}

// A connection does not keep a large params buffer after the request that
// needed it: a thousand kept connections would otherwise each hold up to
// MaxParamsBytes.
func TestServerReleasesLargeParams(t *testing.T) {
	testsupport.CheckGoroutines(t)
	caps := make(chan int, 2)
	ts := startServer(t, "tcp", &Server{Handler: HandlerFunc(func(w *ResponseWriter, r *Request) {
		caps <- cap(r.conn.params) // on the connection's goroutine: no race
		w.Write([]byte("ok"))
	})})
	c := ts.dial(t)
	big := Pair{"BIG", strings.Repeat("v", 60000)}
	c.send(beginRec(1, RoleResponder, FlagKeepConn))
	for range 3 {
		c.send(rec(TypeParams, 1, AppendPair(nil, big), 0))
	}
	c.send(rec(TypeParams, 1, nil, 0), rec(TypeStdin, 1, nil, 0))
	assert.Equal(t, "ok", c.response(1).stdout)
	<-caps

	c.send(request(2, FlagKeepConn, testPairs, ""))
	assert.Equal(t, "ok", c.response(2).stdout)
	assert.LessOrEqual(t, <-caps, keptParamsBytes, "the large buffer of request 1 was kept")
}

// A dial the caller gives up on (the web server aborted the request while
// incpathd was connecting) fails with the caller's cause, not ErrDial: it
// says nothing about the upstream, and must not be logged or counted as
// "cannot connect to upstream". Found by the soak test.
func TestPoolDialAbandoned(t *testing.T) {
	dialing := make(chan struct{})
	p := &Pool{Address: "127.0.0.1:1", Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		close(dialing)
		<-ctx.Done()
		return nil, ctx.Err()
	}}
	defer p.Close()
	ctx, cancel := context.WithCancelCause(context.Background())
	go func() {
		<-dialing
		cancel(ErrAborted)
	}()
	_, _, err := p.Get(ctx)
	require.ErrorIs(t, err, ErrAborted)
	assert.NotErrorIs(t, err, ErrDial)
	st := p.Stats()
	assert.Zero(t, st.DialErrors)
	assert.Zero(t, st.Open, "the slot is given back")

	// A dial that times out on its own is a dial error.
	p2 := &Pool{Address: "127.0.0.1:1", DialTimeout: 10 * time.Millisecond, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}}
	defer p2.Close()
	_, _, err = p2.Get(context.Background())
	require.ErrorIs(t, err, ErrDial)
	assert.Equal(t, uint64(1), p2.Stats().DialErrors)
}

// Issue 10, item 12: request id 0 is reserved for management records
// (FastCGI 1.0, section 3.3), so a BEGIN_REQUEST with id 0 is not a
// request. It is answered as the unknown management record it is and the
// connection closed: the handler never runs, and the web server, which
// waits for an END_REQUEST that cannot come, learns it at once.
func TestServerRefusesRequestIDZero(t *testing.T) {
	testsupport.CheckGoroutines(t)
	var calls atomic.Int32
	ts := startServer(t, "tcp", &Server{Handler: HandlerFunc(func(w *ResponseWriter, r *Request) {
		calls.Add(1)
		echo(w, r)
	})})
	for _, flags := range []uint8{0, FlagKeepConn} {
		c := ts.dial(t)
		c.send(request(0, flags, testPairs, "x"))
		rr := c.next()
		assert.Equal(t, TypeUnknownType, rr.Type, "got record type %d %q", rr.Type, rr.Content)
		assert.Equal(t, uint16(0), rr.ID)
		assert.Equal(t, string([]byte{TypeBeginRequest, 0, 0, 0, 0, 0, 0, 0}), string(rr.Content))
		c.expectClosed()
	}
	assert.Zero(t, calls.Load(), "the handler ran a request with id 0")
	assert.Contains(t, ts.logs.String(), "request id 0")

	// A request with a proper id on a new connection is served.
	c := ts.dial(t)
	c.send(request(1, 0, nil, "y"))
	assert.Equal(t, "body=y\n", c.response(1).stdout)
}
