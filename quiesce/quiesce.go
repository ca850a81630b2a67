// Package quiesce holds new requests at incpathd while the ones already in
// flight finish, so that something can run in php-fpm with no request
// running there (an opcache reset), then lets the held requests go on.
//
// A Gate is an fcgi.Handler in front of the proxy. Open, it costs a
// request two atomic additions and a load. Quiesce closes it: requests that
// arrive wait at the gate, holding no php-fpm connection; once none is in
// flight behind the gate, Quiesce returns and the caller does its work,
// then calls the release function it got. Every wait is bounded: Quiesce
// by its context (it opens the gate again and fails if requests are still
// running), a held request by MaxHold, after which it goes on whatever the
// gate says, so no request fails or hangs because of the gate.
package quiesce

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/incpathd/incpathd/fcgi"
)

// Errors of Quiesce.
var (
	// ErrBusy: another Quiesce holds the gate.
	ErrBusy = errors.New("quiesce: the gate is already closed")
	// ErrNotQuiet: requests were still in flight when the context ended;
	// the gate is open again.
	ErrNotQuiet = errors.New("quiesce: requests still in flight")
)

// Gate holds requests while closed. The zero value is an open gate in
// front of nothing: set Next.
type Gate struct {
	// Next serves the requests.
	Next fcgi.Handler
	// MaxHold bounds how long a request waits at a closed gate; it then
	// goes on to Next. If zero, 30 seconds.
	MaxHold time.Duration

	inFlight atomic.Int64
	closed   atomic.Pointer[chan struct{}] // nil while open; closed on release
	mu       sync.Mutex                    // one Quiesce at a time

	held, heldTotal, overdue, pauses atomic.Int64
	pausedNanos, lastPauseNanos      atomic.Int64
}

// Stats are a Gate's counters.
type Stats struct {
	// Held is the requests waiting at the gate now; HeldTotal all that
	// ever waited, Overdue those that went on after MaxHold.
	Held, HeldTotal, Overdue int64
	// Pauses counts the times the gate closed; Paused is their total
	// length, LastPause the length of the last one.
	Pauses            int64
	Paused, LastPause time.Duration
	// Closed: the gate is closed now.
	Closed bool
}

// Stats returns the counters.
func (g *Gate) Stats() Stats {
	return Stats{
		Held: g.held.Load(), HeldTotal: g.heldTotal.Load(), Overdue: g.overdue.Load(),
		Pauses: g.pauses.Load(), Paused: time.Duration(g.pausedNanos.Load()),
		LastPause: time.Duration(g.lastPauseNanos.Load()), Closed: g.closed.Load() != nil,
	}
}

func (g *Gate) maxHold() time.Duration {
	if g.MaxHold > 0 {
		return g.MaxHold
	}
	return 30 * time.Second
}

// ServeFCGI implements fcgi.Handler.
func (g *Gate) ServeFCGI(w *fcgi.ResponseWriter, r *fcgi.Request) {
	g.enter()
	defer g.inFlight.Add(-1)
	g.Next.ServeFCGI(w, r)
}

// enter counts the request in flight, first waiting while the gate is
// closed. The count comes before the look at the gate, and Quiesce closes
// the gate before it looks at the count: either the request sees the gate
// closed, or Quiesce sees the request in flight.
func (g *Gate) enter() {
	g.inFlight.Add(1)
	ch := g.closed.Load()
	if ch == nil {
		return
	}
	g.inFlight.Add(-1)
	g.held.Add(1)
	g.heldTotal.Add(1)
	defer g.held.Add(-1)
	t := time.NewTimer(g.maxHold())
	defer t.Stop()
	for ch != nil {
		select {
		case <-*ch:
		case <-t.C:
			g.overdue.Add(1)
			g.inFlight.Add(1)
			return
		}
		// Opened, but perhaps closed again at once by the next Quiesce:
		// count, then look again.
		g.inFlight.Add(1)
		if ch = g.closed.Load(); ch != nil {
			g.inFlight.Add(-1)
		}
	}
}

// InFlight is the requests past the gate now.
func (g *Gate) InFlight() int64 { return g.inFlight.Load() }

// pollEvery is how often Quiesce looks at the count while it waits.
const pollEvery = 2 * time.Millisecond

// Quiesce closes the gate and waits until no request is in flight behind
// it. It returns a function that opens the gate again, to be called once;
// on error the gate is open. It fails with ErrBusy if the gate is closed
// already, and with ErrNotQuiet once ctx ends with requests still running.
func (g *Gate) Quiesce(ctx context.Context) (release func(), err error) {
	if !g.mu.TryLock() {
		return nil, ErrBusy
	}
	start := time.Now()
	ch := make(chan struct{})
	g.closed.Store(&ch)
	g.pauses.Add(1)
	var once sync.Once
	release = func() {
		once.Do(func() {
			g.closed.Store(nil)
			close(ch)
			d := time.Since(start)
			g.pausedNanos.Add(int64(d))
			g.lastPauseNanos.Store(int64(d))
			g.mu.Unlock()
		})
	}
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for g.inFlight.Load() > 0 {
		select {
		case <-ctx.Done():
			n := g.inFlight.Load()
			release()
			return nil, fmt.Errorf("%w: %d after %v", ErrNotQuiet, n, time.Since(start).Round(time.Millisecond))
		case <-t.C:
		}
	}
	return release, nil
}
