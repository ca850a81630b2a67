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
	switch state {
	case watchArmed:
		if c.watchTimer != nil {
			c.watchTimer.Stop()
		}
	case watchRunning:
		<-c.watchDone
	}
	return state == watchRunning
}

var aLongTimeAgo = time.Unix(1, 0)
