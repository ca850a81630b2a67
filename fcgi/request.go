package fcgi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

// Request is one responder request from the web server.
type Request struct {
	// ID is the request id the web server chose.
	ID uint16
	// KeepConn is set when the web server keeps the connection after this
	// request (FCGI_KEEP_CONN).
	KeepConn bool
	// Params are the request's name-value pairs in the order received.
	// They are valid until the handler returns: the strings point into a
	// buffer that the connection's next request overwrites, so a handler
	// that keeps one must copy it (strings.Clone).
	Params []Pair
	// RawParams is the PARAMS stream as it came, which Params were decoded
	// from in place; valid as long as they are. Give it to Call.RawParams
	// with pairs taken from Params, and those are sent as copies of it.
	RawParams string
	// Body streams the request's STDIN.
	Body Body

	conn *conn

	// mu guards what an abort, seen on another goroutine, changes.
	mu        sync.Mutex
	cause     error // why the request was canceled; nil while it runs
	onAbort   func()
	ctx       context.Context // made by the first call to Context
	cancelCtx context.CancelCauseFunc
}

// cancel records why the request cannot go on, runs the OnAbort function
// and cancels the context. Only the first cause counts.
func (r *Request) cancel(cause error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cause != nil {
		return
	}
	r.cause = cause
	if r.cancelCtx != nil {
		r.cancelCtx(cause)
	}
	if r.onAbort != nil {
		r.onAbort()
	}
}

// finish ends the request once the handler has returned: its context, if it
// was made, is canceled.
func (r *Request) finish() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.onAbort = nil
	if r.cancelCtx != nil {
		r.cancelCtx(nil)
	}
}

// OnAbort arranges for f to be called when the web server aborts the
// request or its connection fails while the handler runs, as
// context.AfterFunc(r.Context(), f) would, at a fraction of the cost: for a
// handler that must cut short a wait the context cannot reach, such as a
// read from another connection. f runs on the goroutine that saw the abort
// and must not block. There is one f at a time: a later call replaces it,
// and OnAbort(nil) removes it; once OnAbort returns, the f it replaced is not
// running and will not run. If the request was aborted already, f runs
// before OnAbort returns.
func (r *Request) OnAbort(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.onAbort = f
	if f != nil && r.cause != nil {
		f()
	}
}

// StopBody makes a body read in progress, or the next one, fail at once:
// for a handler that no longer needs the body (the application answered
// without reading it all) and must not wait for the web server to send it.
// The connection is then closed after the handler returns.
func (r *Request) StopBody() {
	r.Body.stop.Store(true)
	r.conn.rwc.SetReadDeadline(aLongTimeAgo)
}

// Context is canceled when the web server aborts the request or its
// connection fails, context.Cause tells which, and once the handler has
// returned. It is made on the first call: a handler that never needs it
// costs no context.
func (r *Request) Context() context.Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ctx == nil {
		r.ctx, r.cancelCtx = context.WithCancelCause(context.Background())
		if r.cause != nil {
			r.cancelCtx(r.cause)
		}
	}
	return r.ctx
}

// Body streams a request's STDIN records. Reads past the end return io.EOF;
// after ABORT_REQUEST, ErrAborted.
type Body struct {
	req  *Request
	rest []byte
	done bool
	err  error
	stop atomic.Bool
}

// errBodyStopped is the error of a body read after Request.StopBody.
var errBodyStopped = errors.New("fcgi: body no longer wanted")

// Stop is Request.StopBody: for the upstream side, which sees the body
// as a Stream and not the web server's connection under it.
func (b *Body) Stop() { b.req.StopBody() }

// Done reports whether the whole body has been received (true at once for
// the common request without a body).
func (b *Body) Done() bool { return b.done }

// Next returns the next chunk of the body, as it arrived in one record; it
// is valid until the following call. At the end it returns io.EOF.
func (b *Body) Next() ([]byte, error) {
	if len(b.rest) > 0 {
		p := b.rest
		b.rest = nil
		return p, nil
	}
	if b.done {
		return nil, io.EOF
	}
	if b.err != nil {
		return nil, b.err
	}
	c := b.req.conn
	for {
		c.rwc.SetReadDeadline(deadline(c.srv.readTimeout()))
		if b.stop.Load() {
			b.err = errBodyStopped
			return nil, b.err
		}
		h, content, err := c.r.Next()
		if err != nil {
			if b.stop.Load() {
				// StopBody cut the read short; the web server is still there.
				b.err = errBodyStopped
				return nil, b.err
			}
			if err == io.EOF {
				// The stream ended between records but inside the body: a
				// truncated body must not look like its end.
				err = io.ErrUnexpectedEOF
			}
			b.err = fmt.Errorf("reading body of request %d: %w", b.req.ID, err)
			b.req.cancel(fmt.Errorf("%w: %w", ErrClientGone, err))
			return nil, b.err
		}
		if h.ID != b.req.ID {
			if err := c.otherRecord(b.req.ID, h, content); err != nil {
				b.err = err
				b.req.cancel(err)
				return nil, err
			}
			continue
		}
		switch h.Type {
		case TypeStdin:
			if len(content) == 0 {
				b.done = true
				c.armWatch(b.req)
				return nil, io.EOF
			}
			return content, nil
		case TypeAbortRequest:
			b.err = ErrAborted
			b.req.cancel(ErrAborted)
			return nil, ErrAborted
		default:
			b.err = fmt.Errorf("%w: record type %d in body of request %d", ErrProtocol, h.Type, b.req.ID)
			b.req.cancel(b.err)
			return nil, b.err
		}
	}
}

// Read implements io.Reader.
func (b *Body) Read(p []byte) (int, error) {
	if len(b.rest) == 0 {
		chunk, err := b.Next()
		if err != nil {
			return 0, err
		}
		b.rest = chunk
	}
	n := copy(p, b.rest)
	b.rest = b.rest[n:]
	return n, nil
}
