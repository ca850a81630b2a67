package fcgi

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var (
	// ErrPoolTimeout is returned by Get when no connection became free
	// within WaitTimeout: the application server is saturated.
	ErrPoolTimeout = errors.New("fcgi: timed out waiting for a free upstream connection")
	// ErrPoolClosed is returned by Get after Close.
	ErrPoolClosed = errors.New("fcgi: upstream pool closed")
	// ErrDial wraps a failure to connect to the upstream.
	ErrDial = errors.New("fcgi: cannot connect to upstream")
)

// Pool keeps connections to one FastCGI application server (php-fpm), one
// request in flight on each. php-fpm holds a worker for every open
// connection, idle ones included, so MaxConns bounds idle and busy
// connections together and must not exceed the pool's pm.max_children.
type Pool struct {
	// Address is "host:port", or "unix:/path" for a unix socket.
	Address string
	// MaxConns caps open connections. If zero, 5: php-fpm's shipped
	// pm.max_children, the size that cannot stall a default pool.
	MaxConns int
	// IdleTimeout closes connections unused for this long, giving php-fpm
	// its workers back. If zero, 30s.
	IdleTimeout time.Duration
	// DialTimeout bounds connecting. If zero, 5s.
	DialTimeout time.Duration
	// WaitTimeout bounds the wait for a free connection when MaxConns are
	// busy. If zero, 30s.
	WaitTimeout time.Duration
	// Dial connects; if nil, a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Hold is how long a request waits for an application server that
	// refuses connections or is absent (php-fpm restarting) before it
	// fails with ErrDial: while it refuses, requests wait instead of
	// dialing, one probe dials every HoldRetry, and they go on the moment
	// it connects. If zero, a refused dial fails at once.
	Hold time.Duration
	// HoldMax bounds the requests held at once; one more fails with
	// ErrHoldFull at once. If zero, 1024.
	HoldMax int
	// HoldRetry is how often the probe dials while requests are held. If
	// zero, 10ms.
	HoldRetry time.Duration
	// Logger gets a line when the hold starts and when it ends. If nil,
	// slog.Default().
	Logger *slog.Logger

	mu      sync.Mutex
	idle    []*Conn // most recently used last
	open    int
	waiters []*waiter
	// waitTimer times out the first waiter (armWaitTimer); it fires at
	// waitTimerAt, in ticks, 0 when it is not armed.
	waitTimer   *time.Timer
	waitTimerAt int64
	closed      bool
	pruning     bool
	stats       PoolStats
	hold        holdState
}

// PoolStats counts what the pool did. OutOfStep counts connections given
// back with bytes the application wrote after END_REQUEST, closed instead of
// kept.
type PoolStats struct {
	Dials, DialErrors, Reused, Stale, Timeouts, OutOfStep uint64
	Open, Idle                                            int
}

// Stats returns the pool's counters.
func (p *Pool) Stats() PoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Open, s.Idle = p.open, len(p.idle)
	return s
}

func (p *Pool) maxConns() int {
	if p.MaxConns > 0 {
		return p.MaxConns
	}
	return 5
}

func (p *Pool) idleTimeout() time.Duration { return orDefault(p.IdleTimeout, 30*time.Second) }
func (p *Pool) dialTimeout() time.Duration { return orDefault(p.DialTimeout, 5*time.Second) }
func (p *Pool) waitTimeout() time.Duration { return orDefault(p.WaitTimeout, 30*time.Second) }

func (p *Pool) network() (string, string) {
	if path, ok := strings.CutPrefix(p.Address, "unix:"); ok {
		return "unix", path
	}
	return "tcp", p.Address
}

// Get returns a connection: the most recently used idle one that is still
// alive, or a new one while fewer than MaxConns are open, or the first one
// another request gives back. reused tells whether it served a request
// before (and so may have been closed by php-fpm meanwhile).
//
// ctx's cancellation ends a wait for a free connection or a dial. A ctx
// that is also an Aborter (a proxy's request context, made only if asked
// for) ends the wait by its OnAbort instead, and its Done is then not
// called: it must fire OnAbort whenever Done would close.
func (p *Pool) Get(ctx context.Context) (c *Conn, reused bool, err error) {
	return p.get(ctx, true)
}

// GetUnchecked is Get without the liveness check of an idle connection,
// which costs a system call: for a request that the caller replays, on a
// connection from Get, if a reused one fails before answering. php-fpm
// closes a kept connection only when it recycles or loses a worker, so the
// replay is rare and the check is usually wasted.
func (p *Pool) GetUnchecked(ctx context.Context) (c *Conn, reused bool, err error) {
	return p.get(ctx, false)
}

// get takes a connection as Get says; while the application server
// refuses connections it holds the request (see Hold).
func (p *Pool) get(ctx context.Context, check bool) (c *Conn, reused bool, err error) {
	var held time.Time
	return p.getHeld(ctx, check, &held)
}

// getHeld is get with the time the request started holding, zero if it
// has not: a request's holds share one bound.
func (p *Pool) getHeld(ctx context.Context, check bool, held *time.Time) (c *Conn, reused bool, err error) {
	for {
		c, reused, err = p.get1(ctx, check)
		if err == nil || !errors.Is(err, errHolding) && !p.holds(ctx, err) {
			return c, reused, err
		}
		if ctx.Value(noHoldKey{}) != nil {
			return nil, false, p.holdCause()
		}
		if !errors.Is(err, errHolding) {
			p.markDown(err)
		}
		if err := p.waitUp(ctx, p.holdDeadline(held)); err != nil {
			return nil, false, err
		}
	}
}

// errHolding: the pool holds requests; get1 did not take a slot.
var errHolding = errors.New("fcgi: holding")

func (p *Pool) get1(ctx context.Context, check bool) (c *Conn, reused bool, err error) {
	p.mu.Lock()
	for {
		if p.closed {
			p.mu.Unlock()
			return nil, false, ErrPoolClosed
		}
		if p.hold.down {
			// Kept connections died with the server; they are found out
			// when it is back.
			p.mu.Unlock()
			return nil, false, errHolding
		}
		n := len(p.idle)
		if n == 0 {
			break
		}
		c = p.idle[n-1]
		p.idle = p.idle[:n-1]
		// Stray bytes already read mean the connection is out of step;
		// that much is known without a system call.
		if check && c.alive() || !check && c.R.Buffered() == 0 {
			p.stats.Reused++
			p.mu.Unlock()
			return c, true, nil
		}
		// php-fpm closed it (pm.max_requests, a worker killed): drop it.
		p.stats.Stale++
		p.open--
		c.nc.Close()
	}
	if p.open < p.maxConns() {
		p.open++
		p.mu.Unlock()
		return p.dial(ctx)
	}
	w := newWaiter()
	w.pool = p
	w.deadline = ticks() + int64(p.waitTimeout())
	p.waiters = append(p.waiters, w)
	if len(p.waiters) == 1 {
		p.armWaitTimer()
	}
	p.mu.Unlock()
	return p.wait(ctx, w)
}

// wait waits for what Put, Discard, Close or the wait timer hands w, or
// for the request to end. When ctx is an Aborter, its abort takes w off the
// queue and hands it the end of its wait (abandon): one channel to wait
// on, cheaper than a select, and ctx.Done() not called, which could make
// the request's context only to be waited on. Else ctx.Done() ends it.
func (p *Pool) wait(ctx context.Context, w *waiter) (*Conn, bool, error) {
	if a, ok := ctx.(Aborter); ok {
		a.OnAbort(w.abort)
		h, ok := <-w.c
		// Once OnAbort returns, abort is not running and will not run, so
		// w can be reused.
		a.OnAbort(nil)
		return p.took(ctx, w, h, ok)
	}
	select {
	case h, ok := <-w.c:
		return p.took(ctx, w, h, ok)
	case <-ctx.Done():
		return p.leave(ctx, w)
	}
}

// took ends a wait with what w was handed; ok is false when Close closed
// w.c.
func (p *Pool) took(ctx context.Context, w *waiter, h handoff, ok bool) (*Conn, bool, error) {
	if !ok {
		return nil, false, ErrPoolClosed // w is never reused
	}
	w.free()
	switch {
	case h.timedOut:
		return nil, false, fmt.Errorf("%w after %v (%d connections busy)", ErrPoolTimeout, p.waitTimeout(), p.maxConns())
	case h.aborted:
		return nil, false, context.Cause(ctx)
	}
	return p.handed(ctx, h.c)
}

// abandon takes w off the queue when its request is aborted and hands it
// the end of its wait. A w that is off the queue already has been handed
// something, or is being handed it, and its wait takes that. It runs as
// the request's OnAbort function.
func (p *Pool) abandon(w *waiter) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.unqueue(w) {
		w.c <- handoff{aborted: true}
	}
}

// unqueue takes w off the queue, p.mu held, and reports whether it was on
// it. The rest move up in place: the queue keeps its array.
func (p *Pool) unqueue(w *waiter) bool {
	i := slices.Index(p.waiters, w)
	if i < 0 {
		return false
	}
	p.waiters = slices.Delete(p.waiters, i, i+1)
	return true
}

// leave takes w off the queue after the request ended; what it was handed
// as it gave up is passed on.
func (p *Pool) leave(ctx context.Context, w *waiter) (*Conn, bool, error) {
	err := context.Cause(ctx)
	p.mu.Lock()
	queued := p.unqueue(w)
	p.mu.Unlock()
	if queued {
		w.free()
		return nil, false, err
	}
	h, ok := <-w.c
	if !ok {
		return nil, false, err
	}
	w.free()
	switch {
	case h.timedOut:
	case h.c != nil:
		p.Put(h.c)
	default:
		p.release()
	}
	return nil, false, err
}

// armWaitTimer arms the wait timer for the first waiter, p.mu held; get1
// calls it when a waiter joins an empty queue, expire for the next first
// waiter. The queue is in arrival order and every wait is as long, so the
// first waiter is always the next to time out: one timer serves them all,
// and a wait costs none of its own. A timer armed for an earlier waiter
// (one that got a connection since) is left to fire, for nothing, and
// expire arms it again for the first one then: moving it every time the
// queue fills again would cost a clock read and a move in the runtime's
// timer heap each time.
func (p *Pool) armWaitTimer() {
	at := p.waiters[0].deadline
	if p.waitTimerAt != 0 && p.waitTimerAt <= at {
		return
	}
	p.waitTimerAt = at
	d := time.Duration(at - ticks())
	if p.waitTimer == nil {
		p.waitTimer = time.AfterFunc(d, p.expire)
		return
	}
	p.waitTimer.Reset(d)
}

// expire times out the waiters whose wait is over.
func (p *Pool) expire() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.waitTimerAt = 0
	now := ticks()
	for len(p.waiters) > 0 && now >= p.waiters[0].deadline {
		// Counted here, once: Timeouts is what the web server saw as 503s.
		p.stats.Timeouts++
		p.popWaiter().c <- handoff{timedOut: true}
	}
	if len(p.waiters) > 0 {
		p.armWaitTimer()
	}
}

// waiter is a request waiting in Get. Put or Discard hands it a connection
// or a free slot on c, the wait timer its timeout, abandon its abort; each
// waiter is handed one thing at most, so the send never blocks. Waiters are
// kept for the next wait (waiterFree) with c empty, so that queueing, which
// is routine when more web server connections than MaxConns are busy,
// allocates nothing.
type waiter struct {
	c        chan handoff
	deadline int64 // in ticks
	// pool is the Pool w waits in, for abort; abort, made once, is what
	// the wait hands Aborter.OnAbort.
	pool  *Pool
	abort func()
}

// handoff is what a waiter is handed: a live connection, a free slot to
// dial into (nil c), or the end of its wait (timed out, or its request
// aborted).
type handoff struct {
	c        *Conn
	timedOut bool
	aborted  bool
}

var waiterFree sync.Pool

func newWaiter() *waiter {
	if w, ok := waiterFree.Get().(*waiter); ok {
		return w
	}
	w := &waiter{c: make(chan handoff, 1)}
	w.abort = func() { w.pool.abandon(w) }
	return w
}

// free keeps w, whose c is empty, for the next wait.
func (w *waiter) free() {
	w.pool = nil
	waiterFree.Put(w)
}

// popWaiter takes the first waiter off the queue, p.mu held. The rest move
// up, so that the queue keeps its array: p.waiters[1:] would shrink its
// capacity from the front and make the next append allocate.
func (p *Pool) popWaiter() *waiter {
	w := p.waiters[0]
	n := copy(p.waiters, p.waiters[1:])
	p.waiters[n] = nil
	p.waiters = p.waiters[:n]
	return w
}

// handed takes what Put or Discard gave a waiter: a live connection, or nil
// for a free slot to dial into.
func (p *Pool) handed(ctx context.Context, c *Conn) (*Conn, bool, error) {
	if c != nil {
		p.mu.Lock()
		p.stats.Reused++
		p.mu.Unlock()
		return c, true, nil
	}
	return p.dial(ctx)
}

// dialNet connects to the application server within DialTimeout.
func (p *Pool) dialNet(ctx context.Context) (net.Conn, error) {
	network, addr := p.network()
	dctx, cancel := context.WithTimeout(ctx, p.dialTimeout())
	defer cancel()
	if p.Dial != nil {
		return p.Dial(dctx, network, addr)
	}
	var d net.Dialer
	return d.DialContext(dctx, network, addr)
}

// dial opens a connection in a slot already counted in p.open.
func (p *Pool) dial(ctx context.Context) (*Conn, bool, error) {
	nc, err := p.dialNet(ctx)
	// A dial the caller gave up on (the web server aborted the request)
	// says nothing about the upstream: it is neither counted nor reported
	// as ErrDial, which would read as "php-fpm down" in the log.
	abandoned := err != nil && ctx.Err() != nil
	p.mu.Lock()
	p.stats.Dials++
	if err != nil && !abandoned {
		p.stats.DialErrors++
	}
	p.mu.Unlock()
	if err != nil {
		p.release()
		if abandoned {
			return nil, false, context.Cause(ctx)
		}
		return nil, false, fmt.Errorf("%w %s: %w", ErrDial, p.Address, err)
	}
	c := newConn(nc)
	c.addr = p.Address
	return c, false, nil
}

// Put gives back a connection whose last request ended cleanly with
// END_REQUEST. Anything else must go to Discard. A connection that holds
// bytes read past END_REQUEST, or that saw a late record of an earlier
// request (Late), is out of step with the application and closed instead:
// what follows on it belongs to no request, and must not be read as the
// answer to the next one.
func (p *Pool) Put(c *Conn) {
	if c.late || c.R.Buffered() > 0 {
		p.mu.Lock()
		p.stats.OutOfStep++
		p.mu.Unlock()
		p.Discard(c)
		return
	}
	c.used = ticks()
	// A deadline left behind would make the liveness check fail on a good
	// connection.
	c.clearDeadline()
	p.mu.Lock()
	if p.closed {
		p.open--
		p.mu.Unlock()
		c.nc.Close()
		return
	}
	if len(p.waiters) > 0 {
		w := p.popWaiter()
		p.mu.Unlock()
		w.c <- handoff{c: c}
		return
	}
	p.idle = append(p.idle, c)
	if !p.pruning {
		p.pruning = true
		time.AfterFunc(p.idleTimeout(), p.prune)
	}
	p.mu.Unlock()
}

// Discard closes a connection that cannot be reused.
func (p *Pool) Discard(c *Conn) {
	c.nc.Close()
	p.release()
}

// release frees one slot: to the first waiter, who dials, or to the pool.
func (p *Pool) release() {
	p.mu.Lock()
	if len(p.waiters) > 0 && !p.closed {
		w := p.popWaiter()
		p.mu.Unlock()
		w.c <- handoff{}
		return
	}
	p.open--
	p.mu.Unlock()
}

// prune closes connections idle for longer than IdleTimeout; the oldest
// sit at the front of the stack.
func (p *Pool) prune() {
	now := ticks()
	cutoff := now - int64(p.idleTimeout())
	p.mu.Lock()
	n := 0
	for n < len(p.idle) && p.idle[n].used < cutoff {
		p.idle[n].nc.Close()
		n++
	}
	p.idle = append(p.idle[:0], p.idle[n:]...)
	p.open -= n
	if len(p.idle) > 0 && !p.closed {
		next := time.Duration(p.idle[0].used + int64(p.idleTimeout()) - now)
		time.AfterFunc(max(next, time.Millisecond), p.prune)
	} else {
		p.pruning = false
	}
	p.mu.Unlock()
}

// Close closes idle connections and makes Get fail; connections in use are
// closed as they come back.
func (p *Pool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	p.endHoldLocked(p.hold.up)
	for _, c := range p.idle {
		c.nc.Close()
	}
	p.open -= len(p.idle)
	p.idle = nil
	for _, w := range p.waiters {
		close(w.c) // never reused: waiterFree gets only open ones
	}
	p.waiters = nil
	if p.waitTimer != nil {
		p.waitTimer.Stop()
		p.waitTimerAt = 0
	}
	return nil
}

// Conn is one upstream connection.
type Conn struct {
	nc   net.Conn
	bw   *bufio.Writer
	W    *Writer
	R    *Reader
	used int64  // when it was last given back, in ticks: one clock read
	addr string // the pool's Address, for logs

	// cut breaks off every read and write under way on nc: what an abort
	// runs. Made once, so that arming it costs nothing per request.
	cut func()
	// deadline is set when a deadline may be set on nc. Most requests set
	// none, and clearing one that is not there still costs a trip through
	// the runtime's poller, twice per request.
	deadline atomic.Bool

	// id is the request id of the request under way, prev that of the one
	// before it on this connection; late is set once a record of an
	// earlier request came after its END_REQUEST.
	id, prev uint16
	late     bool

	// For the liveness check before each reuse, made once: nil rc when nc
	// has no file descriptor.
	rc      syscall.RawConn
	peek    func(fd uintptr) bool
	peekBuf [1]byte
	isAlive bool
}

func newConn(nc net.Conn) *Conn {
	c := &Conn{nc: nc, bw: bufio.NewWriterSize(nc, 16<<10)}
	c.deadline.Store(true) // the dialer's is not ours to know
	c.W = NewWriter(c.bw)
	c.R = NewReader(nc)
	c.cut = func() {
		c.deadline.Store(true)
		nc.SetDeadline(aLongTimeAgo)
	}
	if sc, ok := nc.(syscall.Conn); ok {
		c.rc, _ = sc.SyscallConn()
		c.peek = c.peekFD
	}
	return c
}

// NextID returns the request id for the next request on c: a new one for
// every request, 1 to 65535 and round again (0 is for management records),
// so that a record the application writes after END_REQUEST carries the id
// of the request it belongs to and can never pass for the answer to the
// next one.
func (c *Conn) NextID() uint16 {
	c.prev = c.id
	c.id++
	if c.id == 0 {
		c.id = 1
	}
	return c.id
}

// Late reports whether a record with request id belongs to the request
// before the one under way: the application wrote it after that request's
// END_REQUEST. Such a record is no part of any answer; the caller skips it,
// and Put closes c instead of keeping it.
func (c *Conn) Late(id uint16) bool {
	if id == 0 || id != c.prev {
		return false
	}
	c.late = true
	return true
}

// OutOfStep reports whether a late record was seen on c (Late): Put will
// close it.
func (c *Conn) OutOfStep() bool { return c.late }

// NetConn returns the underlying connection, for deadlines.
func (c *Conn) NetConn() net.Conn {
	c.deadline.Store(true) // the caller may set one
	return c.nc
}

// setDeadline sets nc's deadline; a zero t clears it.
func (c *Conn) setDeadline(t time.Time) {
	if t.IsZero() {
		c.clearDeadline()
		return
	}
	c.deadline.Store(true)
	c.nc.SetDeadline(t)
}

// clearDeadline clears nc's deadline if one may be set.
func (c *Conn) clearDeadline() {
	if c.deadline.Load() {
		c.nc.SetDeadline(time.Time{})
		c.deadline.Store(false)
	}
}

// alive reports whether an idle connection can carry a request: php-fpm
// closes a kept connection when its worker is recycled, and nothing but a
// read tells. A non-blocking peek sees EOF (closed) or would-block (alive);
// stray bytes on an idle connection mean it is out of step, so not alive.
func (c *Conn) alive() bool {
	if c.R.Buffered() > 0 {
		return false
	}
	if c.rc == nil {
		return c.peek == nil // no descriptor to check; an error getting one fails
	}
	c.isAlive = false
	err := c.rc.Read(c.peek)
	return err == nil && c.isAlive
}

// peekFD is the liveness check's read. It is a method value kept in c.peek,
// so that a check allocates nothing.
func (c *Conn) peekFD(fd uintptr) bool {
	_, _, err := syscall.Recvfrom(int(fd), c.peekBuf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	c.isAlive = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
	return true
}
