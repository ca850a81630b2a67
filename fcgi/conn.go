package fcgi

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

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
	// idleUntil is when the idle deadline in force runs out, in ticks; 0
	// when the read deadline is another one (a request's), -1 when it is
	// none (IdleTimeout negative). Only the serve goroutine uses it.
	idleUntil int64

	watchMu    sync.Mutex // guards watchState, watchReq, watchArmed
	watchState int
	watchReq   *Request
	watchArmed int64         // when armWatch ran, in ticks
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
		c.idleDeadline()
		err := c.r.wait()
		c.idle.Store(false)
		var h Header
		var content []byte
		if err == nil {
			// A record has begun: from here on the web server must send the
			// request head, BEGIN_REQUEST and PARAMS, within ReadTimeout
			// (serveRequest keeps this deadline), however slowly it trickles.
			// A head that came whole with its first byte, as from every web
			// server we front, needs no more reads, so no deadline: setting
			// one costs a clock read and a move in the runtime's timer heap.
			if !c.r.headBuffered() {
				c.rwc.SetReadDeadline(deadline(c.srv.readTimeout()))
				c.idleUntil = 0
			}
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

// idleDeadline bounds the wait for the next request by IdleTimeout. The
// deadline is moved only once it has come closer than idleSlack of a whole
// IdleTimeout: a busy kept connection would otherwise move it on every
// request. So an idle connection is closed after between 15/16 of
// IdleTimeout and all of it.
func (c *conn) idleDeadline() {
	d := c.srv.idleTimeout()
	if d < 0 {
		if c.idleUntil != -1 {
			c.rwc.SetReadDeadline(time.Time{})
			c.idleUntil = -1
		}
		return
	}
	now := ticks()
	if c.idleUntil > 0 && c.idleUntil-now >= int64(d-d/idleSlack) {
		return
	}
	c.rwc.SetReadDeadline(time.Now().Add(d))
	c.idleUntil = now + int64(d)
}

// idleSlack is the fraction (1/idleSlack) of IdleTimeout by which an idle
// connection may be closed early.
const idleSlack = 16

// epoch is the origin of ticks.
var epoch = time.Now()

// ticks reads the monotonic clock alone (time.Since of a time with a
// monotonic reading), cheaper than time.Now, in nanoseconds from epoch.
func ticks() int64 { return int64(time.Since(epoch)) }

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
		return c.refuse(id, StatusUnknownRole, keep)
	}
	aborted, err := c.readParams(id)
	if err != nil {
		return err
	}
	if aborted {
		return c.refuse(id, StatusRequestComplete, keep)
	}
	// The params point into c.params, which the next request overwrites:
	// Request.Params is documented as valid until the handler returns.
	raw := inPlace(c.params)
	pairs, err := decodeParams(c.pairs[:0], raw, c.srv.maxParams())
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
	return c.runHandler(id, keep, pairs, raw)
}

// refuse ends a request that never reaches the handler, and says whether
// the connection goes on.
func (c *conn) refuse(id uint16, proto uint8, keep bool) error {
	if err := c.endRequest(id, proto); err != nil || !keep {
		return errDone
	}
	return nil
}

// readParams reads request id's PARAMS stream into c.params, up to
// MaxParamsBytes. aborted is set when the web server sent ABORT_REQUEST
// before the end of the stream.
func (c *conn) readParams(id uint16) (aborted bool, err error) {
	c.params = c.params[:0]
	limit := c.srv.maxParamsBytes()
	for {
		h, content, err := c.r.Next()
		if err != nil {
			return false, fmt.Errorf("reading params of request %d: %w", id, err)
		}
		if h.ID != id {
			if err := c.otherRecord(id, h, content); err != nil {
				return false, err
			}
			continue
		}
		if h.Type == TypeAbortRequest {
			return true, nil
		}
		if h.Type != TypeParams {
			return false, fmt.Errorf("%w: record type %d before the end of params of request %d", ErrProtocol, h.Type, id)
		}
		if len(content) == 0 {
			return false, nil
		}
		if len(c.params)+len(content) > limit {
			return false, fmt.Errorf("%w: request %d sent more than %d bytes of params", ErrParamsTooLarge, id, limit)
		}
		c.params = append(c.params, content...)
	}
}

// runHandler runs the handler on a request whose params have been read,
// ends the request, and says whether the connection can carry another.
func (c *conn) runHandler(id uint16, keep bool, pairs []Pair, raw string) error {
	req := &c.req
	*req = Request{ID: id, KeepConn: keep, Params: pairs, RawParams: raw, conn: c}
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
	streamed := !req.Body.done
	if req.Body.done {
		c.armWatch(req)
	}
	w := &c.rw
	*w = ResponseWriter{c: c, id: id}
	c.srv.Handler.ServeFCGI(w, req)
	if c.stopWatch() || streamed {
		// The watch or the body reads set read deadlines of their own.
		c.idleUntil = 0
	}
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
