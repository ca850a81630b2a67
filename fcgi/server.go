package fcgi

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
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
	// pay for it. The watch starts between half this delay and all of it
	// (one ticker for the server, not a timer per request), so an abort is
	// seen at most this late. If zero, 5ms. If negative, watching starts as
	// soon as the body has been read.
	AbortWatchDelay time.Duration
	// Logger receives one line per failure. If nil, slog.Default().
	Logger *slog.Logger

	mu        sync.Mutex
	listeners map[*net.Listener]struct{}
	conns     map[*conn]struct{}
	closing   atomic.Bool
	sem       chan struct{}
	semOnce   sync.Once
	sweeping  atomic.Bool // sweepWatches runs
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
