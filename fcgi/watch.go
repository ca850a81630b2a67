package fcgi

import (
	"errors"
	"fmt"
	"os"
	"time"
)

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
//
// No timer per request: arming and disarming one on every request was 2% of
// the proxy's CPU. The server's sweeper (sweepWatches) starts the watches
// that are due.
func (c *conn) armWatch(req *Request) {
	now := ticks()
	c.watchMu.Lock()
	c.watchReq = req
	c.watchState = watchArmed
	c.watchArmed = now
	c.watchMu.Unlock()
	if c.srv.abortWatchDelay() <= 0 {
		go c.startWatch()
		return
	}
	c.srv.runSweeper()
}

// runSweeper starts the sweeper unless it runs.
func (s *Server) runSweeper() {
	if !s.sweeping.Load() && s.sweeping.CompareAndSwap(false, true) {
		go s.sweepWatches()
	}
}

// sweepWatches runs while requests are armed, ticking every half
// AbortWatchDelay (at most every sweepMax), and starts the watch of each
// request armed for at least half the delay: from half AbortWatchDelay to
// all of it after it was armed. It ends at a tick that finds none armed, so
// it outlives the last request by at most a tick.
func (s *Server) sweepWatches() {
	d := s.abortWatchDelay()
	t := time.NewTicker(min(max(d/2, time.Microsecond), sweepMax))
	defer t.Stop()
	for range t.C {
		if s.sweep(d / 2) {
			continue
		}
		// An arm that saw the sweeper running came before this store, so
		// the sweep after it sees its request.
		s.sweeping.Store(false)
		if !s.sweep(d/2) || !s.sweeping.CompareAndSwap(false, true) {
			return
		}
	}
}

// sweepMax is the longest tick of the sweeper.
const sweepMax = time.Second

// sweep starts the watches of requests armed for at least due and reports
// whether any request is armed.
func (s *Server) sweep(due time.Duration) (armed bool) {
	now := ticks()
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.watchMu.Lock()
		if c.watchState == watchArmed {
			armed = true
			if now-c.watchArmed >= int64(due) {
				go c.startWatch()
			}
		}
		c.watchMu.Unlock()
	}
	return armed
}

// startWatch runs on its own goroutine when the delay is up, and watches
// unless the request ended meanwhile. One started for an earlier request
// may start the watch of the next one early, which is harmless.
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
// read deadline in the past if a watch ran, which it reports.
func (c *conn) stopWatch() bool {
	c.watchMu.Lock()
	state := c.watchState
	c.watchState = watchOff
	c.watchReq = nil
	if state == watchRunning {
		c.rwc.SetReadDeadline(aLongTimeAgo)
	}
	c.watchMu.Unlock()
	if state == watchRunning {
		<-c.watchDone
	}
	return state == watchRunning
}

var aLongTimeAgo = time.Unix(1, 0)
