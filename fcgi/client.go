package fcgi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync/atomic"
	"time"
)

var (
	// ErrUpstream wraps a failure talking to the application server:
	// sending the request, reading the answer, or an answer that breaks the
	// protocol.
	ErrUpstream = errors.New("fcgi: upstream failed")
	// ErrSink wraps a failure of the Sink that RoundTrip passes the answer
	// to: for a proxy, the web server's connection.
	ErrSink = errors.New("fcgi: passing the answer on failed")
	// ErrBodyUnread is returned by RoundTrip when the application ended the
	// request before it had the whole body (fewer bytes than CONTENT_LENGTH,
	// or its end not sent within bodyEndWait): its answer reached the Sink
	// whole, but the connection is out of step and must be discarded.
	ErrBodyUnread = errors.New("fcgi: application ended before reading the body")
)

// A Sink receives an application's answer as RoundTrip reads it. A
// ResponseWriter is one: a proxy passes the answer on as it comes.
type Sink interface {
	// WriteRecord takes the content of one STDOUT or STDERR record.
	WriteRecord(t uint8, p []byte) error
	// Flush is called when nothing more of the answer is buffered.
	Flush() error
	// End is called with END_REQUEST's statuses.
	End(appStatus uint32, protoStatus uint8) error
}

// A Stream is a request body that RoundTrip sends as it arrives. A Body is
// one.
type Stream interface {
	// Next returns the next chunk, io.EOF at the end.
	Next() ([]byte, error)
	// Stop makes a Next under way, or the next one, fail at once: the
	// application answered without reading the rest.
	Stop()
}

// An Aborter runs a function when the request it stands for is aborted. A
// Request is one (Request.OnAbort).
type Aborter interface {
	OnAbort(f func())
}

// Call is one responder request for RoundTrip.
type Call struct {
	// Params are sent as they are.
	Params []Pair
	// RawParams, if set, is the stream some of Params were decoded from in
	// place and kept unchanged (Request.RawParams): those are copied from it
	// (Writer.WriteParamsFrom). It changes the cost, not what is sent.
	RawParams string
	// KeepConn asks the application to keep the connection open after the
	// request (FCGI_KEEP_CONN).
	KeepConn bool
	// Body, if not nil, is streamed as STDIN on its own goroutine while the
	// answer is read, so that an application answering before it has read
	// everything cannot deadlock against us. If nil, the body is empty.
	Body Stream
	// Abort, if not nil, cuts the round trip short when it fires, and the
	// context is then looked at only for the cause of a failure: a request
	// that is never aborted costs no context. If nil, the context's deadline
	// and cancellation bound the round trip.
	Abort Aborter
	// Logger receives one line per connection on which the application
	// wrote after the end of a request. If nil, slog.Default().
	Logger *slog.Logger
}

func (call *Call) logger() *slog.Logger {
	if call.Logger != nil {
		return call.Logger
	}
	return slog.Default()
}

// Result says how far a round trip got.
type Result struct {
	// Started reports whether any answer record reached the Sink: after
	// that, no other answer can replace it.
	Started bool
	// Status is the HTTP status read from the first STDOUT record
	// (ResponseStatus), 0 if none came.
	Status int
}

// bodyEndWait bounds how long RoundTrip waits, once END_REQUEST came, for
// the body copier to finish sending the end of a body it has read whole: a
// peer that stopped reading could block it for ever.
const bodyEndWait = time.Second

// RoundTrip runs one request on c and passes the answer to sink as it
// comes. A new request id is taken for it (NextID); a record the
// application wrote after an earlier request's END_REQUEST is skipped,
// logged once per connection, and c is then closed by Pool.Put. A nil error
// means END_REQUEST came and c can go back to its pool (Put); on any error
// it must be discarded. Failures of the application are wrapped in
// ErrUpstream, failures of sink in ErrSink; an abort returns the context's
// cause.
func (c *Conn) RoundTrip(ctx context.Context, call *Call, sink Sink) (res Result, err error) {
	id := c.NextID()
	if call.Abort != nil {
		c.clearDeadline()
		// Once OnAbort(nil) returns, the cut is neither running nor to
		// come: it cannot hit the connection after it went back to the pool
		// and on to another request, which would then fail for no reason
		// (the soak test saw it with context.AfterFunc).
		call.Abort.OnAbort(c.cut)
		defer call.Abort.OnAbort(nil)
	} else {
		dl, _ := ctx.Deadline()
		c.setDeadline(dl)
		stop := context.AfterFunc(ctx, c.cut)
		defer func() {
			if !stop() && err == nil {
				// The cut ran, or runs, after the answer came: the
				// connection's deadline is not ours to trust any more.
				err = fmt.Errorf("%w: %w", ErrUpstream, context.Cause(ctx))
			}
		}()
	}
	body, err := c.send(id, call)
	if err != nil {
		// An abort as the request went out cut the write short.
		if cause := context.Cause(ctx); cause != nil {
			return res, cause
		}
		return res, err
	}
	if body != nil {
		defer body.wait()
	}
	for {
		h, content, err := c.R.Next()
		if err != nil {
			return res, c.readFailed(ctx, body, err)
		}
		if h.ID != id {
			if err := c.stray(call, h, id); err != nil {
				return res, err
			}
			continue
		}
		switch h.Type {
		case TypeStdout, TypeStderr:
			if err := c.pass(&res, sink, h.Type, content); err != nil {
				return res, err
			}
		case TypeEndRequest:
			return res, c.end(call, &res, sink, body, id, content)
		default:
			return res, fmt.Errorf("%w: unexpected record type %d", ErrUpstream, h.Type)
		}
	}
}

// send writes the request head, the params and, for an empty body, its end;
// a body to stream gets its copier.
func (c *Conn) send(id uint16, call *Call) (*bodyCopy, error) {
	var flags uint8
	if call.KeepConn {
		flags = FlagKeepConn
	}
	c.W.WriteBeginRequest(id, RoleResponder, flags)
	if err := c.W.WriteParamsFrom(id, call.Params, call.RawParams); err != nil {
		return nil, err
	}
	if call.Body == nil {
		c.W.WriteRecord(TypeStdin, id, nil)
	}
	if err := c.W.Flush(); err != nil {
		return nil, fmt.Errorf("%w: sending request: %w", ErrUpstream, err)
	}
	if call.Body == nil {
		return nil, nil
	}
	b := &bodyCopy{id: id, src: call.Body, conn: c, done: make(chan struct{}), want: contentLength(call.Params)}
	go b.run()
	return b, nil
}

// readFailed says why reading the answer failed: an abort, the body
// copier's own failure, or the application.
func (c *Conn) readFailed(ctx context.Context, body *bodyCopy, err error) error {
	if cause := context.Cause(ctx); cause != nil {
		return cause
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// The read deadline is ctx's, and may pass a moment before ctx
		// itself says so.
		if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
			return fmt.Errorf("reading response: %w", context.DeadlineExceeded)
		}
	}
	if body != nil && body.failed() != nil {
		return body.failed()
	}
	return fmt.Errorf("%w: reading response: %w", ErrUpstream, err)
}

// stray handles a record for another request id than the one under way.
func (c *Conn) stray(call *Call, h Header, id uint16) error {
	seen := c.OutOfStep()
	if !c.Late(h.ID) {
		return fmt.Errorf("%w: record for request %d, want %d", ErrUpstream, h.ID, id)
	}
	// Written after the previous request's END_REQUEST, once the connection
	// was back in the pool: no part of this answer. Skipped, and the
	// connection closed after this request; logged once, however many come.
	if !seen {
		call.logger().Warn("application wrote after the end of a request; its connection is closed", "upstream", c.addr, "type", h.Type, "id", h.ID)
	}
	return nil
}

// pass hands one STDOUT or STDERR record to sink.
func (c *Conn) pass(res *Result, sink Sink, t uint8, content []byte) error {
	if len(content) == 0 {
		return nil
	}
	if t == TypeStdout && res.Status == 0 {
		res.Status = ResponseStatus(content)
	}
	res.Started = true
	if err := sink.WriteRecord(t, content); err != nil {
		return fmt.Errorf("%w: %w", ErrSink, err)
	}
	// Flush when the application has nothing more queued, so a streamed
	// page reaches the browser without a write per record.
	if c.R.Buffered() == 0 {
		if err := sink.Flush(); err != nil {
			return fmt.Errorf("%w: %w", ErrSink, err)
		}
	}
	return nil
}

// end handles END_REQUEST.
func (c *Conn) end(call *Call, res *Result, sink Sink, body *bodyCopy, id uint16, content []byte) error {
	end, err := ParseEndRequest(content)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUpstream, err)
	}
	res.Started = true
	if body != nil && !body.finished() && body.delivered() {
		// The answer overtook the copier's last step: the end of the body
		// on its way to the application, or, the application holding
		// CONTENT_LENGTH bytes, the web server's end-of-body record still
		// to come. Wait for it, boundedly: the application read its whole
		// body, and both connections stay in step.
		t := time.NewTimer(bodyEndWait)
		select {
		case <-body.done:
		case <-t.C:
		}
		t.Stop()
	}
	if body != nil && !body.finished() {
		// The script answered without reading its whole body: stop reading
		// it; this connection is out of step with the application, so it is
		// not reused.
		body.wait()
		sink.End(end.AppStatus, end.ProtocolStatus)
		return ErrBodyUnread
	}
	if err := sink.End(end.AppStatus, end.ProtocolStatus); err != nil {
		return fmt.Errorf("%w: %w", ErrSink, err)
	}
	if c.R.Buffered() > 0 {
		// More came with END_REQUEST: the answer went out whole, and
		// Pool.Put closes the connection rather than let the next request
		// read it.
		call.logger().Warn("application wrote after the end of a request; its connection is closed", "upstream", c.addr, "id", id)
	}
	return nil
}

// bodyCopy streams a request body to the application on its own
// goroutine.
type bodyCopy struct {
	id   uint16 // the upstream request id
	src  Stream
	conn *Conn
	done chan struct{}
	err  atomic.Pointer[error]
	ok   atomic.Bool
	last atomic.Bool // the whole body was read; its end is being sent
	// want is the request's CONTENT_LENGTH, -1 if it has none; sent counts
	// the bytes of body handed to the application so far.
	want int64
	sent atomic.Int64
}

// contentLength returns the CONTENT_LENGTH param (the last one, as php-fpm
// takes it), -1 if there is none or it is not a length.
func contentLength(params []Pair) int64 {
	n, err := strconv.ParseInt(Param(params, "CONTENT_LENGTH"), 10, 64)
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// delivered reports whether the application has, or is being sent, the
// whole body: its end, or CONTENT_LENGTH bytes, all php-fpm reads before it
// answers (the empty STDIN record that follows, it skips before the next
// request: fcgi_read_request in php-src's main/fastcgi.c).
func (b *bodyCopy) delivered() bool {
	return b.last.Load() || b.want >= 0 && b.sent.Load() == b.want
}

// run is the body copier goroutine.
func (b *bodyCopy) run() {
	defer close(b.done)
	w := b.conn.W
	for {
		chunk, err := b.src.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			b.fail(fmt.Errorf("reading request body: %w", err))
			b.conn.cut() // the answer will not come: unblock its read
			return
		}
		// Flush each chunk: the application may answer on what it has
		// (and a slow upload must reach it as it comes). Counted before it
		// goes out, as last is: the answer may come before this goroutine
		// runs again.
		b.sent.Add(int64(len(chunk)))
		w.WriteRecord(TypeStdin, b.id, chunk)
		if err := w.Flush(); err != nil {
			b.fail(fmt.Errorf("%w: sending request body: %w", ErrUpstream, err))
			return
		}
	}
	// Say so before the end of the body goes out: the application may
	// answer the moment it arrives, before this goroutine runs again.
	b.last.Store(true)
	w.WriteRecord(TypeStdin, b.id, nil)
	if err := w.Flush(); err != nil {
		b.fail(fmt.Errorf("%w: sending request body: %w", ErrUpstream, err))
		return
	}
	b.ok.Store(true)
}

func (b *bodyCopy) fail(err error) { b.err.Store(&err) }

func (b *bodyCopy) failed() error {
	if e := b.err.Load(); e != nil {
		return *e
	}
	return nil
}

func (b *bodyCopy) finished() bool {
	select {
	case <-b.done:
		return b.ok.Load()
	default:
		return false
	}
}

// wait ends the copier: if it still runs, its reads of the body are
// stopped and its writes to the application cut off.
func (b *bodyCopy) wait() {
	select {
	case <-b.done:
		return
	default:
	}
	b.src.Stop()
	b.conn.cut()
	<-b.done
}

// GetValues asks the application for the values of names (FCGI_MAX_CONNS,
// FCGI_MAX_REQS, FCGI_MPXS_CONNS) with FCGI_GET_VALUES and returns those it
// answers. ctx bounds the exchange. php-fpm closes the connection after it
// answers: c is for Discard.
func (c *Conn) GetValues(ctx context.Context, names ...string) ([]Pair, error) {
	dl, _ := ctx.Deadline()
	c.setDeadline(dl)
	stop := context.AfterFunc(ctx, c.cut)
	defer stop()
	var q []byte
	for _, name := range names {
		q = AppendPair(q, Pair{Name: name})
	}
	c.W.WriteRecord(TypeGetValues, 0, q)
	if err := c.W.Flush(); err != nil {
		return nil, fmt.Errorf("%w: sending FCGI_GET_VALUES: %w", ErrUpstream, err)
	}
	for {
		h, content, err := c.R.Next()
		if err != nil {
			return nil, fmt.Errorf("%w: reading FCGI_GET_VALUES_RESULT: %w", ErrUpstream, err)
		}
		if h.ID != 0 || h.Type != TypeGetValuesResult {
			continue // a stray record of an earlier request
		}
		pairs, err := DecodeParams(nil, content)
		if err != nil {
			return nil, fmt.Errorf("%w: FCGI_GET_VALUES_RESULT: %w", ErrUpstream, err)
		}
		return pairs, nil
	}
}

// Collector is a Sink that keeps a whole answer in memory: for a caller
// that reads the answer itself (a health check, a call of incpathd's own
// script) rather than pass it on.
type Collector struct {
	// Stdout and Stderr are the streams as received.
	Stdout, Stderr []byte
	// Max bounds each stream: a longer one fails the round trip. If zero,
	// 64 KiB.
	Max int
}

// WriteRecord implements Sink.
func (c *Collector) WriteRecord(t uint8, p []byte) error {
	buf := &c.Stdout
	if t == TypeStderr {
		buf = &c.Stderr
	}
	limit := c.Max
	if limit <= 0 {
		limit = 64 << 10
	}
	if len(*buf)+len(p) > limit {
		return fmt.Errorf("answer over %d bytes", limit)
	}
	*buf = append(*buf, p...)
	return nil
}

// Flush implements Sink; it does nothing.
func (c *Collector) Flush() error { return nil }

// End implements Sink; it does nothing.
func (c *Collector) End(uint32, uint8) error { return nil }
