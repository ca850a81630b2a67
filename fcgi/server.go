package fcgi

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

var (
	// ErrAborted is the cause of a request's context, and the error its body
	// returns, when the web server sends ABORT_REQUEST.
	ErrAborted = errors.New("fcgi: request aborted by web server")
	// ErrClientGone is the cause of a request's context when the web
	// server's connection fails or closes while the request runs.
	ErrClientGone = errors.New("fcgi: web server connection closed")
	// ErrServerClosed is returned by Serve after Shutdown or Close.
	ErrServerClosed = errors.New("fcgi: server closed")
	// ErrParamsTooLarge is returned when a PARAMS stream exceeds the limit.
	ErrParamsTooLarge = errors.New("fcgi: params exceed limit")
	// ErrProtocol is returned for a record that breaks the protocol.
	ErrProtocol = errors.New("fcgi: protocol error")
)

// A Handler answers one request. It runs on the connection's goroutine;
// the request's body may be read from another goroutine while the handler
// writes the response, but the handler must not return before that reader
// is done. The Request and the ResponseWriter are reused by the connection's
// next request: neither may be used once the handler has returned.
type Handler interface {
	ServeFCGI(w *ResponseWriter, r *Request)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(w *ResponseWriter, r *Request)

// ServeFCGI calls f(w, r).
func (f HandlerFunc) ServeFCGI(w *ResponseWriter, r *Request) { f(w, r) }

// Server accepts FastCGI connections from a web server and hands each
// responder request to Handler. It does not multiplex: one request at a time
// per connection, as every web server we front sends them.
type Server struct {
	// Handler answers requests. It must be set.
	Handler Handler
	// MaxParamsBytes caps one request's PARAMS stream. If zero, 1 MiB. A
	// request over it is logged and its connection closed.
	MaxParamsBytes int
	// MaxParams caps the number of name-value pairs in one request. If
	// zero, 1000. A request over it is logged and its connection closed.
	// Each pair costs a slot in the handler's tables however short it is:
	// a MaxParamsBytes stream of empty pairs would be half a million.
	MaxParams int
	// MaxConns caps concurrent web server connections; a connection over
	// it waits in the listen queue. It is also what FCGI_GET_VALUES reports
	// for FCGI_MAX_CONNS and FCGI_MAX_REQS. If zero, 1024.
	MaxConns int
	// ReadTimeout bounds the request head, BEGIN_REQUEST and the whole
	// PARAMS stream, from its first byte, so that a web server trickling
	// it cannot hold a connection; then the wait for each body record. If
	// zero, 60s. If negative, none.
	ReadTimeout time.Duration
	// IdleTimeout bounds the wait for the next request on a kept
	// connection. If zero, 5 minutes. If negative, none.
	IdleTimeout time.Duration
	// AbortWatchDelay is how long a request runs, once its body has been
	// read, before the connection is watched for an ABORT_REQUEST or a
	// hang-up, which cancel the request's context. Watching costs a
	// goroutine, a read and a wake-up; most requests end sooner and never
	// pay for it. An abort is seen at most this late. If zero, 5ms. If
	// negative, watching starts as soon as the body has been read.
	AbortWatchDelay time.Duration
	// Logger receives one line per failure. If nil, slog.Default().
	Logger *slog.Logger

	mu        sync.Mutex
	listeners map[*net.Listener]struct{}
	conns     map[*conn]struct{}
	closing   atomic.Bool
	sem       chan struct{}
	semOnce   sync.Once
}

func (s *Server) maxParamsBytes() int {
	if s.MaxParamsBytes > 0 {
		return s.MaxParamsBytes
	}
	return 1 << 20
}

func (s *Server) maxParams() int {
	if s.MaxParams > 0 {
		return s.MaxParams
	}
	return 1000
}

func (s *Server) maxConns() int {
	if s.MaxConns > 0 {
		return s.MaxConns
	}
	return 1024
}

func (s *Server) readTimeout() time.Duration { return orDefault(s.ReadTimeout, 60*time.Second) }
func (s *Server) idleTimeout() time.Duration { return orDefault(s.IdleTimeout, 5*time.Minute) }
func (s *Server) abortWatchDelay() time.Duration {
	return orDefault(s.AbortWatchDelay, 5*time.Millisecond)
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// deadline turns a timeout into a deadline; none for a negative timeout.
func deadline(d time.Duration) time.Time {
	if d < 0 {
		return time.Time{}
	}
	return time.Now().Add(d)
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// Serve accepts connections on l until Shutdown or Close, serving each on
// its own goroutine. It always returns a non-nil error; after Shutdown or
// Close, ErrServerClosed.
func (s *Server) Serve(l net.Listener) error {
	if !s.trackListener(&l, true) {
		return ErrServerClosed
	}
	defer s.trackListener(&l, false)
	s.semOnce.Do(func() { s.sem = make(chan struct{}, s.maxConns()) })
	var backoff time.Duration
	for {
		s.sem <- struct{}{}
		rwc, err := l.Accept()
		if err != nil {
			<-s.sem
			if s.closing.Load() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) || isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.logger().Warn("accept failed; retrying", "err", err, "retry_in", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		c := s.newConn(rwc)
		if c == nil {
			rwc.Close()
			<-s.sem
			return ErrServerClosed
		}
		go c.serve()
	}
}

// isTemporary reports accept errors worth retrying: running out of file
// descriptors should slow us down, not stop the daemon.
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

func (s *Server) trackListener(l *net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listeners == nil {
		s.listeners = make(map[*net.Listener]struct{})
	}
	if add {
		if s.closing.Load() {
			return false
		}
		s.listeners[l] = struct{}{}
	} else {
		delete(s.listeners, l)
	}
	return true
}

// Shutdown stops accepting, closes idle connections, and waits for the
// requests in flight to finish, or for ctx to end, whichever comes first;
// then it closes whatever is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	s.mu.Lock()
	for l := range s.listeners {
		(*l).Close()
	}
	s.mu.Unlock()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		if s.closeIdle() {
			return nil
		}
		select {
		case <-ctx.Done():
			s.Close()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Close closes the listeners and every connection at once.
func (s *Server) Close() error {
	s.closing.Store(true)
	s.mu.Lock()
	defer s.mu.Unlock()
	for l := range s.listeners {
		(*l).Close()
	}
	for c := range s.conns {
		c.rwc.Close()
	}
	return nil
}

// closeIdle closes connections between requests and reports whether none
// are left.
func (s *Server) closeIdle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.idle.Load() {
			c.rwc.Close()
		}
	}
	return len(s.conns) == 0
}

func (s *Server) newConn(rwc net.Conn) *conn {
	c := &conn{srv: s, rwc: rwc, watchDone: make(chan struct{}, 1)}
	c.br = getReader(rwc)
	c.r = &Reader{r: c.br}
	c.bw = getWriter(rwc)
	c.w = NewWriter(c.bw)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return nil
	}
	if s.conns == nil {
		s.conns = make(map[*conn]struct{})
	}
	s.conns[c] = struct{}{}
	return c
}

// Buffers of web server connections, kept for the next connection: front
// ends such as Caddy open one per request, and the reader's is 64 KiB.
var readers, writers sync.Pool

func getReader(r io.Reader) *bufio.Reader {
	if br, ok := readers.Get().(*bufio.Reader); ok {
		br.Reset(r)
		return br
	}
	return bufio.NewReaderSize(r, readerSize)
}

func putReader(br *bufio.Reader) {
	br.Reset(nil)
	readers.Put(br)
}

func getWriter(w io.Writer) *bufio.Writer {
	if bw, ok := writers.Get().(*bufio.Writer); ok {
		bw.Reset(w)
		return bw
	}
	return bufio.NewWriterSize(w, 16<<10)
}

func putWriter(bw *bufio.Writer) {
	bw.Reset(nil)
	writers.Put(bw)
}

// conn is one web server connection.
type conn struct {
	srv  *Server
	rwc  net.Conn
	r    *Reader
	br   *bufio.Reader // c.r's, from readers
	bw   *bufio.Writer // from writers
	wmu  sync.Mutex    // guards w: management answers may interleave with a response
	w    *Writer
	idle atomic.Bool

	params []byte // reused PARAMS buffer
	pairs  []Pair
	// The request in progress and its writer, reused by the next one.
	req Request
	rw  ResponseWriter

	watchMu    sync.Mutex // guards watchState and watchReq
	watchState int
	watchReq   *Request
	watchTimer *time.Timer   // starts the watch; made on first use
	watchDone  chan struct{} // a running watch ended
}

// serve reads requests until the connection ends.
func (c *conn) serve() {
	defer func() {
		v := recover()
		if v != nil {
			c.srv.logger().Error("panic serving connection", "remote", c.rwc.RemoteAddr(), "panic", v)
		}
		c.rwc.Close()
		if v == nil {
			// Nothing reads or writes the connection any more (after a
			// panic, a body reader or the watch might): its buffers can
			// serve another one.
			putReader(c.br)
			putWriter(c.bw)
		}
		c.srv.mu.Lock()
		delete(c.srv.conns, c)
		c.srv.mu.Unlock()
		<-c.srv.sem
	}()
	for {
		c.idle.Store(true)
		if c.srv.closing.Load() {
			return
		}
		c.rwc.SetReadDeadline(deadline(c.srv.idleTimeout()))
		err := c.r.wait()
		c.idle.Store(false)
		var h Header
		var content []byte
		if err == nil {
			// A record has begun: from here on the web server must send the
			// request head, BEGIN_REQUEST and PARAMS, within ReadTimeout
			// (serveRequest keeps this deadline), however slowly it trickles.
			c.rwc.SetReadDeadline(deadline(c.srv.readTimeout()))
			h, content, err = c.r.Next()
		}
		if err != nil {
			// A connection left idle past IdleTimeout is routine, not a failure.
			idle := errors.Is(err, os.ErrDeadlineExceeded) && c.r.Buffered() == 0
			if err != io.EOF && !idle && !errors.Is(err, net.ErrClosed) {
				c.logf("reading record", err)
			}
			return
		}
		if err := c.handleRecord(h, content); err != nil {
			if !errors.Is(err, errDone) {
				c.logf("closing connection", err)
			}
			return
		}
	}
}

// errDone ends a connection without a log line: the web server asked us to
// close it, or it has gone.
var errDone = errors.New("fcgi: connection done")

func (c *conn) logf(msg string, err error) {
	if errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
		return
	}
	c.srv.logger().Warn("fcgi: "+msg, "remote", c.rwc.RemoteAddr().String(), "err", err)
}

// handleRecord handles a record that arrives between requests.
func (c *conn) handleRecord(h Header, content []byte) error {
	switch h.Type {
	case TypeBeginRequest:
		if h.ID == 0 {
			return c.refuseManagementID()
		}
		return c.serveRequest(h, content)
	case TypeGetValues:
		return c.answerGetValues(content)
	case TypeAbortRequest, TypeStdin, TypeData, TypeParams:
		// Late records of a request we already finished (an abort racing its
		// end, the tail of a body we stopped reading): nothing to do.
		return nil
	default:
		return c.answerUnknownType(h.Type)
	}
}

// refuseManagementID refuses a BEGIN_REQUEST with request id 0, which the
// specification reserves for management records (section 3.3): a record
// with id 0 is a management record, and one of a type the application does
// not know is answered with UNKNOWN_TYPE. The connection is then closed: the
// web server waits for an END_REQUEST that cannot come, and the PARAMS and
// STDIN after it belong to no request.
func (c *conn) refuseManagementID() error {
	if err := c.answerUnknownType(TypeBeginRequest); err != nil {
		return err
	}
	return fmt.Errorf("%w: BEGIN_REQUEST with request id 0, which is reserved for management records", ErrProtocol)
}

func (c *conn) answerUnknownType(t uint8) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.w.WriteRecord(TypeUnknownType, 0, []byte{t, 0, 0, 0, 0, 0, 0, 0})
	return c.w.Flush()
}

func (c *conn) answerGetValues(content []byte) error {
	asked, err := DecodeParams(nil, content)
	if err != nil {
		return fmt.Errorf("GET_VALUES: %w", err)
	}
	n := strconv.Itoa(c.srv.maxConns())
	var b []byte
	for _, p := range asked {
		switch p.Name {
		case "FCGI_MAX_CONNS", "FCGI_MAX_REQS":
			b = AppendPair(b, Pair{p.Name, n})
		case "FCGI_MPXS_CONNS":
			b = AppendPair(b, Pair{p.Name, "0"})
		}
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.w.WriteRecord(TypeGetValuesResult, 0, b)
	return c.w.Flush()
}

// endRequest writes END_REQUEST for a request refused before its handler.
func (c *conn) endRequest(id uint16, proto uint8) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.w.WriteEndRequest(id, 0, proto)
	return c.w.Flush()
}

// A connection keeps its params buffers between requests up to these sizes,
// which fit every ordinary request.
const (
	keptParamsBytes = 64 << 10
	keptParams      = 256
)

// serveRequest reads a request's params, runs the handler and ends the
// request.
func (c *conn) serveRequest(h Header, content []byte) error {
	br, err := ParseBeginRequest(content)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	id := h.ID
	keep := br.Flags&FlagKeepConn != 0
	if br.Role != RoleResponder {
		if err := c.endRequest(id, StatusUnknownRole); err != nil || !keep {
			return errDone
		}
		return nil
	}
	c.params = c.params[:0]
	limit := c.srv.maxParamsBytes()
	for {
		h, content, err := c.r.Next()
		if err != nil {
			return fmt.Errorf("reading params of request %d: %w", id, err)
		}
		if h.ID != id {
			if err := c.otherRecord(id, h, content); err != nil {
				return err
			}
			continue
		}
		if h.Type == TypeAbortRequest {
			if err := c.endRequest(id, StatusRequestComplete); err != nil || !keep {
				return errDone
			}
			return nil
		}
		if h.Type != TypeParams {
			return fmt.Errorf("%w: record type %d before the end of params of request %d", ErrProtocol, h.Type, id)
		}
		if len(content) == 0 {
			break
		}
		if len(c.params)+len(content) > limit {
			return fmt.Errorf("%w: request %d sent more than %d bytes of params", ErrParamsTooLarge, id, limit)
		}
		c.params = append(c.params, content...)
	}
	// The params point into c.params, which the next request overwrites:
	// Request.Params is documented as valid until the handler returns.
	pairs, err := decodeParams(c.pairs[:0], inPlace(c.params), c.srv.maxParams())
	if err != nil {
		return fmt.Errorf("params of request %d: %w", id, err)
	}
	c.pairs = pairs
	// An unusually large buffer goes now rather than stay with the
	// connection (kept connections times MaxParamsBytes would otherwise stay
	// allocated); the pairs keep it alive until the request ends.
	if cap(c.params) > keptParamsBytes {
		c.params = nil
	}
	defer func() {
		clear(c.pairs)
		if cap(c.pairs) > keptParams {
			c.pairs = nil
		}
	}()

	req := &c.req
	*req = Request{ID: id, KeepConn: keep, Params: pairs, conn: c}
	req.Body.req = req
	// Most requests carry no body: the web server sends the empty STDIN
	// record with the params. Take it now, so the handler knows there is
	// nothing to stream and the watch for aborts can start at once.
	if c.r.Buffered() >= HeaderLen {
		if nh, err := c.r.peekHeader(); err == nil && nh.ID == id && nh.Type == TypeStdin && nh.ContentLength == 0 {
			c.r.Next()
			req.Body.done = true
		}
	}
	if req.Body.done {
		c.armWatch(req)
	}
	w := &c.rw
	*w = ResponseWriter{c: c, id: id}
	c.srv.Handler.ServeFCGI(w, req)
	c.stopWatch()
	req.finish()
	if !w.ended {
		w.End(0, StatusRequestComplete)
	}
	if w.err == errAbandoned {
		return errDone
	}
	if w.err != nil {
		return fmt.Errorf("writing response of request %d: %w", id, w.err)
	}
	if !req.Body.done || req.Body.err != nil {
		// The body was not read to its end: what follows on the connection
		// is the rest of it, so the connection cannot carry another request,
		// and the web server may still be sending it.
		if req.Body.err == nil || errors.Is(req.Body.err, errBodyStopped) {
			c.lingerClose()
		}
		return errDone
	}
	if !keep {
		return errDone
	}
	return nil
}

// otherRecord handles a record for another request id, or a management
// record, while request id is in progress.
func (c *conn) otherRecord(id uint16, h Header, content []byte) error {
	switch {
	case h.ID == 0 && h.Type == TypeGetValues:
		return c.answerGetValues(content)
	case h.ID == 0:
		return c.answerUnknownType(h.Type)
	case h.Type == TypeBeginRequest:
		// We said FCGI_MPXS_CONNS=0; refuse the second request, keep the first.
		return c.endRequest(h.ID, StatusCantMpxConn)
	case h.Type == TypeParams, h.Type == TypeStdin, h.Type == TypeData, h.Type == TypeAbortRequest:
		// The rest of a request refused above: the web server sent it before
		// it read CANT_MPX_CONN. Skip it, as between requests.
		return nil
	default:
		return fmt.Errorf("%w: record type %d for request %d while serving request %d", ErrProtocol, h.Type, h.ID, id)
	}
}

// Watch states: whether the connection is watched for an abort or a hang-up
// while a request runs.
const (
	watchOff     = iota // between requests, or before the body ends
	watchArmed          // the timer runs; nothing reads the connection
	watchRunning        // a goroutine reads the connection
)

// armWatch arranges for the connection to be watched for an abort or a
// hang-up once the request has run for AbortWatchDelay after its body was
// read: nothing else reads the connection then. Most requests end sooner and
// never start the watch, which costs a goroutine, a read and a wake-up.
// armWatch and stopWatch are never called at the same time: the handler must
// not return before its body reader is done.
func (c *conn) armWatch(req *Request) {
	c.watchMu.Lock()
	c.watchReq = req
	c.watchState = watchArmed
	c.watchMu.Unlock()
	d := c.srv.abortWatchDelay()
	switch {
	case d <= 0:
		go c.startWatch()
	case c.watchTimer == nil:
		c.watchTimer = time.AfterFunc(d, c.startWatch)
	default:
		c.watchTimer.Reset(d)
	}
}

// startWatch runs on its own goroutine when the delay is up, and watches
// unless the request ended meanwhile. A firing left over from an earlier
// request may start the watch of the next one early, which is harmless.
func (c *conn) startWatch() {
	c.watchMu.Lock()
	if c.watchState != watchArmed {
		c.watchMu.Unlock()
		return
	}
	c.watchState = watchRunning
	req := c.watchReq
	c.rwc.SetReadDeadline(time.Time{})
	c.watchMu.Unlock()
	c.watch(req)
}

// watch blocks until the web server sends something or goes away. Only an
// ABORT_REQUEST for this request or a failed connection cancels it; any
// other record is left for the serve loop.
func (c *conn) watch(req *Request) {
	defer func() { c.watchDone <- struct{}{} }()
	h, err := c.r.peekHeader()
	switch {
	case err == nil && h.Type == TypeAbortRequest && h.ID == req.ID:
		req.cancel(ErrAborted)
	case err == nil:
	case errors.Is(err, os.ErrDeadlineExceeded):
		// stopWatch woke us.
	default:
		req.cancel(fmt.Errorf("%w: %w", ErrClientGone, err))
	}
}

// stopWatch ends the watch of the request that is ending, and leaves the
// read deadline in the past if a watch ran.
func (c *conn) stopWatch() {
	c.watchMu.Lock()
	state := c.watchState
	c.watchState = watchOff
	c.watchReq = nil
	if state == watchRunning {
		c.rwc.SetReadDeadline(aLongTimeAgo)
	}
	c.watchMu.Unlock()
	switch state {
	case watchArmed:
		if c.watchTimer != nil {
			c.watchTimer.Stop()
		}
	case watchRunning:
		<-c.watchDone
	}
}

var aLongTimeAgo = time.Unix(1, 0)

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

// ResponseWriter writes a request's STDOUT and STDERR records and ends it.
type ResponseWriter struct {
	c     *conn
	id    uint16
	ended bool
	err   error
}

// WriteRecord writes p as records of type t (TypeStdout or TypeStderr).
// Empty p writes nothing: End closes the streams.
func (w *ResponseWriter) WriteRecord(t uint8, p []byte) error {
	if w.err != nil {
		return w.err
	}
	if len(p) == 0 {
		return nil
	}
	w.c.wmu.Lock()
	w.err = w.c.w.WriteRecord(t, w.id, p)
	w.c.wmu.Unlock()
	return w.err
}

// Write writes p to STDOUT.
func (w *ResponseWriter) Write(p []byte) (int, error) {
	if err := w.WriteRecord(TypeStdout, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush sends what is buffered to the web server.
func (w *ResponseWriter) Flush() error {
	if w.err != nil {
		return w.err
	}
	w.c.wmu.Lock()
	w.err = w.c.w.Flush()
	w.c.wmu.Unlock()
	return w.err
}

// End closes STDOUT and writes END_REQUEST with the given statuses. The
// server calls it with (0, StatusRequestComplete) if the handler did not.
func (w *ResponseWriter) End(appStatus uint32, protoStatus uint8) error {
	if w.ended {
		return w.err
	}
	w.ended = true
	if w.err != nil {
		return w.err
	}
	w.c.wmu.Lock()
	defer w.c.wmu.Unlock()
	w.c.w.WriteRecord(TypeStdout, w.id, nil)
	w.c.w.WriteEndRequest(w.id, appStatus, protoStatus)
	w.err = w.c.w.Flush()
	return w.err
}

// Abandon ends the request without END_REQUEST and closes the connection
// after the handler returns: the way to tell the web server that a response
// already under way broke.
func (w *ResponseWriter) Abandon() {
	if !w.ended {
		w.ended = true
		w.c.wmu.Lock()
		w.c.w.Flush()
		w.c.wmu.Unlock()
		if w.err == nil {
			w.err = errAbandoned
		}
	}
}

var errAbandoned = errors.New("fcgi: response abandoned")

// Err returns the first error writing to the web server.
func (w *ResponseWriter) Err() error { return w.err }
