package fcgi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"syscall"
	"time"
)

var (
	// ErrHoldFull is returned by Get when the application server refuses
	// connections and HoldMax requests already wait for it.
	ErrHoldFull = errors.New("fcgi: upstream down and the hold queue is full")
	// ErrHoldTimeout wraps the dial error when the application server was
	// still refusing connections after Hold. It wraps ErrDial too.
	ErrHoldTimeout = errors.New("fcgi: upstream still down at the end of the hold")
)

// HoldStats counts what the hold did: requests held, held now, released
// when the upstream came back, timed out at the bound, refused because the
// hold queue was full, and the time they spent held in all.
type HoldStats struct {
	Held, Released, TimedOut, Rejected uint64
	Holding                            int
	HeldTime                           time.Duration
	// Down reports whether the pool is holding: its last dial was refused
	// and no probe has connected since.
	Down bool
}

// holdState is the pool's hold, guarded by Pool.mu.
type holdState struct {
	down    bool
	since   time.Time     // when the pool went down
	up      chan struct{} // closed when it comes back
	kick    chan struct{} // a held request wants a probe now
	cause   error         // the dial error that took it down
	holding int
	stats   HoldStats
}

func (p *Pool) holdMax() int {
	if p.HoldMax > 0 {
		return p.HoldMax
	}
	return 1024
}

func (p *Pool) holdRetry() time.Duration { return orDefault(p.HoldRetry, 10*time.Millisecond) }

func (p *Pool) logger() *slog.Logger {
	if p.Logger != nil {
		return p.Logger
	}
	return slog.Default()
}

// HoldStats returns the hold's counters.
func (p *Pool) HoldStats() HoldStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.hold.stats
	s.Holding, s.Down = p.hold.holding, p.hold.down
	return s
}

// refused reports whether a dial error means the application server is
// stopped or starting, not broken: nothing listens on the port
// (ECONNREFUSED), the listening socket closed during the connect
// (ECONNRESET: php-fpm's master exiting), the unix socket is absent
// (ENOENT: php-fpm removes it when it stops and makes it again when it
// starts), or the connect timed out (a listen queue that is full, a host
// that is rebooting).
func refused(err error) bool {
	var se syscall.Errno
	if errors.As(err, &se) && (se == syscall.ECONNREFUSED || se == syscall.ECONNRESET || se == syscall.ENOENT) {
		return true
	}
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded)
}

// holds reports whether a failed dial makes the request wait for the
// application server instead of failing. A dial the caller gave up on
// comes back as its context's cause, not ErrDial, and is never held.
func (p *Pool) holds(ctx context.Context, err error) bool {
	return p.Hold > 0 && errors.Is(err, ErrDial) && refused(err) && ctx.Value(noHoldKey{}) == nil
}

type noHoldKey struct{}

// WithoutHold returns a context under which Get and Fresh fail at once when
// the application server refuses connections, instead of holding: for a
// health check, which must say what it finds.
func WithoutHold(ctx context.Context) context.Context {
	return context.WithValue(ctx, noHoldKey{}, true)
}

// markDown puts the pool in its hold after a refused dial: new requests
// wait for the application server (waitUp) instead of dialing it, and one
// probe goroutine dials until it answers.
func (p *Pool) markDown(cause error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.hold.down || p.closed {
		return
	}
	p.hold.down, p.hold.since, p.hold.cause = true, time.Now(), cause
	p.hold.up = make(chan struct{})
	p.hold.kick = make(chan struct{}, 1)
	p.logger().Warn("upstream refuses connections; holding new requests until it answers again",
		"upstream", p.Address, "hold", p.Hold, "err", cause)
	go p.probeUntilUp(p.hold.up, p.hold.kick)
}

// holdCause is the dial error that started the hold under way.
func (p *Pool) holdCause() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.hold.cause == nil { // up again meanwhile
		return fmt.Errorf("%w %s: refused a moment ago", ErrDial, p.Address)
	}
	return p.hold.cause
}

// waitUp holds a request until the pool is up again, the deadline passes
// or ctx ends. A nil error means: try again.
func (p *Pool) waitUp(ctx context.Context, deadline time.Time) error {
	p.mu.Lock()
	if !p.hold.down || p.closed {
		p.mu.Unlock()
		return nil
	}
	cause := p.hold.cause
	if p.hold.holding >= p.holdMax() {
		p.hold.stats.Rejected++
		p.mu.Unlock()
		return fmt.Errorf("%w (%d held): %w", ErrHoldFull, p.holdMax(), cause)
	}
	p.hold.holding++
	p.hold.stats.Held++
	up, kick := p.hold.up, p.hold.kick
	p.mu.Unlock()
	select {
	case kick <- struct{}{}:
	default:
	}
	start := time.Now()
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	var err error
	select {
	case <-up:
	case <-t.C:
		err = fmt.Errorf("%w %s: %w after %v: %w", ErrDial, p.Address, ErrHoldTimeout, p.Hold, cause)
	case <-ctx.Done():
		err = context.Cause(ctx)
	}
	p.mu.Lock()
	p.hold.holding--
	p.hold.stats.HeldTime += time.Since(start)
	switch {
	case err == nil:
		p.hold.stats.Released++
	case errors.Is(err, ErrHoldTimeout):
		p.hold.stats.TimedOut++
	}
	p.mu.Unlock()
	return err
}

// holdIdle is the probe's interval while no request is held: a pool that
// stays down costs a dial a second, and a request that comes makes the
// probe dial at once.
const holdIdle = time.Second

// probeUntilUp is the hold's probe goroutine: it asks the application
// server for FCGI_GET_VALUES every HoldRetry while requests are held, and
// once one is answered it releases them. A connect alone proves nothing: a
// php-fpm that is stopping still accepts until its master closes the
// socket, then resets what it accepted; the answer comes from a worker.
func (p *Pool) probeUntilUp(up chan struct{}, kick chan struct{}) {
	t := time.NewTimer(p.holdRetry())
	defer t.Stop()
	for {
		select {
		case <-up:
			return // Close released the held requests
		case <-t.C:
		case <-kick:
			if !t.Stop() {
				<-t.C
			}
		}
		p.mu.Lock()
		closed, holding := p.closed, p.hold.holding
		p.mu.Unlock()
		if closed {
			return // Close released the held requests
		}
		nc, err := p.dialNet(context.Background())
		if err == nil {
			err = p.answers(nc)
			nc.Close()
			if err == nil {
				p.endHold(up, nil)
				return
			}
		} else if !refused(err) {
			// Failing otherwise: the hold is over, and the requests it
			// releases dial for themselves and fail with what they get.
			p.endHold(up, err)
			return
		}
		next := p.holdRetry()
		if holding == 0 {
			next = holdIdle
		}
		t.Reset(next)
	}
}

// answers runs an FCGI_GET_VALUES round trip on nc within DialTimeout.
func (p *Pool) answers(nc net.Conn) error {
	nc.SetDeadline(time.Now().Add(p.dialTimeout()))
	c := newConn(nc)
	c.W.WriteRecord(TypeGetValues, 0, AppendPair(nil, Pair{Name: "FCGI_MPXS_CONNS"}))
	if err := c.W.Flush(); err != nil {
		return err
	}
	for {
		h, _, err := c.R.Next()
		if err != nil {
			return err
		}
		if h.ID == 0 && h.Type == TypeGetValuesResult {
			return nil
		}
	}
}

// Suspect tells the pool that a connection failed before any answer, as
// the ones to a php-fpm that is stopping do. With Hold, the pool holds new
// requests until the application server answers again, and Suspect
// returns true: the caller may replay the request, which then waits for
// that. Without Hold it does nothing and returns false.
func (p *Pool) Suspect(err error) bool {
	if p.Hold <= 0 {
		return false
	}
	p.markDown(err)
	return true
}

// endHold ends the pool's hold: err is nil when the application server
// answered the probe.
func (p *Pool) endHold(up chan struct{}, err error) {
	p.mu.Lock()
	ended := p.endHoldLocked(up)
	down, held := time.Since(p.hold.since), p.hold.holding
	p.mu.Unlock()
	switch {
	case !ended:
	case err == nil:
		p.logger().Info("upstream answers again; held requests go on", "upstream", p.Address, "down_for", down, "held", held)
	default:
		p.logger().Warn("upstream hold ended: the probe failed otherwise; held requests dial again", "upstream", p.Address, "down_for", down, "held", held, "err", err)
	}
}

// endHoldLocked releases the held requests of the hold up belongs to, once.
func (p *Pool) endHoldLocked(up chan struct{}) bool {
	if !p.hold.down || p.hold.up != up {
		return false
	}
	p.hold.down, p.hold.cause = false, nil
	close(up)
	return true
}

// holdDeadline returns when a request that starts holding now must give
// up: the first hold of a request starts its bound, later ones share it.
func (p *Pool) holdDeadline(first *time.Time) time.Time {
	if first.IsZero() {
		*first = time.Now()
	}
	return first.Add(p.Hold)
}
