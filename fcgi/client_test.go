package fcgi_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/internal/fcgitest"
	"github.com/incpathd/incpathd/internal/testsupport"
)

// conn returns a pooled connection to addr, discarded when the test ends.
func conn(t *testing.T, addr string) (*fcgi.Pool, *fcgi.Conn) {
	t.Helper()
	p := &fcgi.Pool{Address: addr}
	t.Cleanup(func() { p.Close() })
	c, _, err := p.Get(context.Background())
	require.NoError(t, err)
	return p, c
}

// chunks is a Stream of fixed chunks.
type chunks struct {
	left    [][]byte
	stopped bool
}

func (s *chunks) Next() ([]byte, error) {
	if s.stopped {
		return nil, errors.New("stopped")
	}
	if len(s.left) == 0 {
		return nil, io.EOF
	}
	c := s.left[0]
	s.left = s.left[1:]
	return c, nil
}

func (s *chunks) Stop() { s.stopped = true }

// failingSink refuses every record, as a web server that went away does.
type failingSink struct{ fcgi.Collector }

func (failingSink) WriteRecord(uint8, []byte) error { return errors.New("broken pipe") }

// RoundTrip sends the params and the body, passes STDOUT and STDERR to the
// sink, reads the status, and leaves the connection fit for the pool.
func TestRoundTrip(t *testing.T) {
	testsupport.CheckGoroutines(t)
	app := fcgitest.StartHandler(t, func(w *fcgi.ResponseWriter, r *fcgi.Request) {
		body, _ := io.ReadAll(&r.Body)
		w.WriteRecord(fcgi.TypeStderr, []byte("warning"))
		w.Write([]byte("Status: 404 Not Found\r\n\r\n" + string(body)))
	})
	p, c := conn(t, app.Addr)
	var out fcgi.Collector
	body := &chunks{left: [][]byte{[]byte("hello "), []byte("world")}}
	call := fcgi.Call{Params: []fcgi.Pair{{Name: "X", Value: "1"}}, KeepConn: true, Body: body}
	res, err := c.RoundTrip(context.Background(), &call, &out)
	require.NoError(t, err)
	assert.Equal(t, fcgi.Result{Started: true, Status: 404}, res)
	assert.Equal(t, "Status: 404 Not Found\r\n\r\nhello world", string(out.Stdout))
	assert.Equal(t, "warning", string(out.Stderr))
	assert.Equal(t, [][]fcgi.Pair{{{Name: "X", Value: "1"}}}, app.Params())

	// Again on the same connection: a new request id, the same answer.
	p.Put(c)
	c, reused, err := p.Get(context.Background())
	require.NoError(t, err)
	assert.True(t, reused)
	out = fcgi.Collector{}
	_, err = c.RoundTrip(context.Background(), &fcgi.Call{KeepConn: true}, &out)
	require.NoError(t, err)
	assert.Equal(t, "Status: 404 Not Found\r\n\r\n", string(out.Stdout))
	p.Discard(c)
}

// A failing sink ends the round trip with ErrSink, not ErrUpstream: the
// application did nothing wrong.
func TestRoundTripSinkFails(t *testing.T) {
	app := fcgitest.StartApp(t, func([]fcgi.Pair) []byte { return []byte("\r\nhello") })
	p, c := conn(t, app.Addr)
	defer p.Discard(c)
	res, err := c.RoundTrip(context.Background(), &fcgi.Call{}, &failingSink{})
	assert.ErrorIs(t, err, fcgi.ErrSink)
	assert.NotErrorIs(t, err, fcgi.ErrUpstream)
	assert.True(t, res.Started)
}

// Without an Aborter the context bounds the round trip: an application that
// never answers fails it at the deadline, with the context's error.
func TestRoundTripContextDeadline(t *testing.T) {
	testsupport.CheckGoroutines(t)
	release := make(chan struct{})
	app := fcgitest.StartHandler(t, func(w *fcgi.ResponseWriter, r *fcgi.Request) { <-release })
	defer close(release)
	p, c := conn(t, app.Addr)
	defer p.Discard(c)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.RoundTrip(ctx, &fcgi.Call{}, &fcgi.Collector{})
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 5*time.Second)
}

// aborter fires its function when told to, as Request.OnAbort does on an
// ABORT_REQUEST.
type aborter struct{ f chan func() }

func (a *aborter) OnAbort(f func()) {
	if f != nil {
		a.f <- f
	}
}

// With an Aborter, the abort cuts the read from the application short.
func TestRoundTripAbort(t *testing.T) {
	release := make(chan struct{})
	app := fcgitest.StartHandler(t, func(w *fcgi.ResponseWriter, r *fcgi.Request) { <-release })
	defer close(release)
	p, c := conn(t, app.Addr)
	defer p.Discard(c)
	a := &aborter{f: make(chan func(), 1)}
	go func() { (<-a.f)() }()
	_, err := c.RoundTrip(context.Background(), &fcgi.Call{Abort: a}, &fcgi.Collector{})
	assert.ErrorIs(t, err, fcgi.ErrUpstream, "the context says nothing: the read failed")
}

// An application that answers before reading its body gets its answer
// through, and the round trip says the connection is out of step.
func TestRoundTripBodyUnread(t *testing.T) {
	app := fcgitest.StartHandler(t, func(w *fcgi.ResponseWriter, r *fcgi.Request) {
		w.Write([]byte("\r\nearly"))
	})
	p, c := conn(t, app.Addr)
	defer p.Discard(c)
	never := make(chan struct{})
	body := &blocking{stop: never}
	var out fcgi.Collector
	res, err := c.RoundTrip(context.Background(), &fcgi.Call{Body: body}, &out)
	assert.ErrorIs(t, err, fcgi.ErrBodyUnread)
	assert.True(t, res.Started)
	assert.Equal(t, "\r\nearly", string(out.Stdout))
	assert.True(t, body.stopped, "the body copier was stopped")
}

// blocking is a Stream whose first chunk comes, and then nothing until
// Stop.
type blocking struct {
	sent    int
	stop    chan struct{}
	stopped bool
}

func (b *blocking) Next() ([]byte, error) {
	if b.sent == 0 {
		b.sent++
		return []byte("chunk " + strconv.Itoa(b.sent)), nil
	}
	<-b.stop
	return nil, errors.New("stopped")
}

func (b *blocking) Stop() {
	b.stopped = true
	close(b.stop)
}

// aborted is an Aborter whose request was aborted already: like
// Request.OnAbort, it runs f at once.
type aborted struct{}

func (aborted) OnAbort(f func()) {
	if f != nil {
		f()
	}
}

// An abort that comes as the request is being sent cuts the write short;
// the round trip reports the abort, not an upstream failure (the soak test
// saw 502s for aborted requests).
func TestRoundTripAbortWhileSending(t *testing.T) {
	app := fcgitest.StartApp(t, func([]fcgi.Pair) []byte { return []byte("\r\nhello") })
	p, c := conn(t, app.Addr)
	defer p.Discard(c)
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(fcgi.ErrAborted)
	_, err := c.RoundTrip(ctx, &fcgi.Call{Abort: aborted{}}, &fcgi.Collector{})
	assert.ErrorIs(t, err, fcgi.ErrAborted)
	assert.NotErrorIs(t, err, fcgi.ErrUpstream)
}

// lateEnd is a Stream of one chunk whose end comes only a while after the
// application answered, as a web server's empty STDIN record that incpathd
// has not read yet when php-fpm, holding CONTENT_LENGTH bytes, answers.
type lateEnd struct {
	chunk    []byte
	answered <-chan struct{}
	sent     bool
	stop     chan struct{}
}

func (s *lateEnd) Next() ([]byte, error) {
	if !s.sent {
		s.sent = true
		return s.chunk, nil
	}
	<-s.answered
	select {
	case <-s.stop:
		return nil, errors.New("stopped")
	case <-time.After(100 * time.Millisecond):
		return nil, io.EOF
	}
}

func (s *lateEnd) Stop() { close(s.stop) }

// An application that answers once it has CONTENT_LENGTH bytes, before the
// end of the body came, read the whole body: RoundTrip waits for that end
// and ends normally, and the connection is fit for the next request (nginx
// answered small POSTs with 502 when this cost its connection).
func TestRoundTripAnswerBeforeBodyEnd(t *testing.T) {
	testsupport.CheckGoroutines(t)
	answered := make(chan struct{}, 1)
	addr := fcgitest.StartRaw(t, func(_ int, c net.Conn) { fpmLike(c, answered) })
	p, c := conn(t, addr)
	defer func() { p.Discard(c) }()
	body := &lateEnd{chunk: []byte("a=1"), answered: answered, stop: make(chan struct{})}
	call := fcgi.Call{Params: []fcgi.Pair{{Name: "CONTENT_LENGTH", Value: "3"}}, KeepConn: true, Body: body}
	var out fcgi.Collector
	res, err := c.RoundTrip(context.Background(), &call, &out)
	require.NoError(t, err, "the body was whole: not an unread one")
	assert.True(t, res.Started)
	assert.Equal(t, "\r\na=1", string(out.Stdout))

	// The connection is in step: the next request on it gets its own answer.
	p.Put(c)
	c, reused, err := p.Get(context.Background())
	require.NoError(t, err)
	assert.True(t, reused)
	out = fcgi.Collector{}
	call = fcgi.Call{Params: []fcgi.Pair{{Name: "CONTENT_LENGTH", Value: "2"}}, KeepConn: true, Body: &chunks{left: [][]byte{[]byte("b2")}}}
	_, err = c.RoundTrip(context.Background(), &call, &out)
	require.NoError(t, err)
	assert.Equal(t, "\r\nb2", string(out.Stdout))
}

// fpmLike serves requests on c as php-fpm does: it answers once it has read
// CONTENT_LENGTH bytes of body, without waiting for the empty STDIN record,
// skips empty STDIN records before a BEGIN_REQUEST (fcgi_read_request in
// php-src's main/fastcgi.c), and closes the connection on any other record
// there. After each answer it tells answered, if it has room.
func fpmLike(c net.Conn, answered chan<- struct{}) {
	c.SetDeadline(time.Now().Add(10 * time.Second)) // nothing hangs if the test fails
	r := fcgi.NewReader(c)
	bw := bufio.NewWriter(c)
	w := fcgi.NewWriter(bw)
	for {
		h, _, err := r.Next()
		if err != nil {
			return
		}
		if h.Type == fcgi.TypeStdin && h.ContentLength == 0 {
			continue
		}
		if h.Type != fcgi.TypeBeginRequest {
			return // out of step
		}
		var params []byte
		for {
			ph, content, err := r.Next()
			if err != nil || ph.Type != fcgi.TypeParams {
				return
			}
			if len(content) == 0 {
				break
			}
			params = append(params, content...)
		}
		pairs, err := fcgi.DecodeParams(nil, params)
		if err != nil {
			return
		}
		want := 0
		for _, p := range pairs {
			if p.Name == "CONTENT_LENGTH" {
				want, _ = strconv.Atoi(p.Value)
			}
		}
		var body []byte
		for len(body) < want {
			sh, content, err := r.Next()
			if err != nil || sh.Type != fcgi.TypeStdin || len(content) == 0 {
				return
			}
			body = append(body, content...)
		}
		w.WriteRecord(fcgi.TypeStdout, h.ID, append([]byte("\r\n"), body...))
		w.WriteRecord(fcgi.TypeStdout, h.ID, nil)
		w.WriteEndRequest(h.ID, 0, fcgi.StatusRequestComplete)
		if bw.Flush() != nil {
			return
		}
		select {
		case answered <- struct{}{}:
		default:
		}
	}
}

// A body really cut short, fewer bytes sent than CONTENT_LENGTH when the
// application answered, still takes the unread path at once: no wait for a
// web server that may go on sending for long.
func TestRoundTripBodyShortOfContentLength(t *testing.T) {
	app := fcgitest.StartHandler(t, func(w *fcgi.ResponseWriter, r *fcgi.Request) {
		w.Write([]byte("\r\nearly"))
	})
	p, c := conn(t, app.Addr)
	defer p.Discard(c)
	body := &blocking{stop: make(chan struct{})}
	call := fcgi.Call{Params: []fcgi.Pair{{Name: "CONTENT_LENGTH", Value: "1000"}}, Body: body}
	start := time.Now()
	_, err := c.RoundTrip(context.Background(), &call, &fcgi.Collector{})
	assert.ErrorIs(t, err, fcgi.ErrBodyUnread)
	assert.True(t, body.stopped, "the body copier was stopped")
	assert.Less(t, time.Since(start), 900*time.Millisecond, "no wait for the rest of a body cut short")
}
