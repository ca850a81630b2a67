package proxy

import (
	"context"
	"log/slog"
	"time"

	"github.com/incpathd/incpathd/fcgi"
)

// Observer is told about every request the proxy finishes: metrics, access
// logs. RequestDone runs on the request's goroutine after the response has
// ended, so it adds to the time a kept web server connection waits for its
// next request and must be quick; it must be safe for concurrent use. A nil
// Proxy.Observer costs nothing.
type Observer interface {
	RequestDone(Done)
}

// Done describes a finished request. It is passed by value so that
// reporting a request allocates nothing; its slices and strings stay valid
// only during the call.
type Done struct {
	// Params are the request's params as the web server sent them
	// (REQUEST_METHOD, REQUEST_URI, REMOTE_ADDR...).
	Params []fcgi.Pair
	// FrontEnd is the front end's name from pin.Name ("nginx"), "" when
	// none was given.
	FrontEnd string
	// Release is the docroot the request was pinned to: the resolved one,
	// the trusted one of a --docroot-sapi-list front end, or "" for a
	// request passed through or refused before it was pinned.
	Release string
	// Status is the HTTP status the web server was given: the application's
	// Status header (200 without one, 302 with only a Location header, as
	// nginx reads it), or the status of the error page the proxy answered
	// with. A request the web server aborted counts as 499.
	Status int
	// Duration runs from the start of the handler to the end of the
	// response.
	Duration time.Duration
	// Err is why the proxy answered instead of the application, or why the
	// response was cut short; nil for a response that came whole from the
	// application, whatever its status.
	Err error
}

// exchange is what ServeFCGI learns about a request on its way, kept on
// its stack.
type exchange struct {
	start    time.Time
	frontEnd string
	release  string
	status   int  // 0 until the application's first STDOUT bytes
	observed bool // someone wants to hear about this request
}

// begin starts watching a request when an Observer or the debug log wants
// it: one clock read, and nothing at all otherwise.
func (p *Proxy) begin(x *exchange) {
	x.observed = p.Observer != nil || p.logger().Enabled(context.Background(), slog.LevelDebug)
	if x.observed {
		x.start = time.Now()
	}
}

// finish reports a finished request to the Observer and the debug log.
func (p *Proxy) finish(r *fcgi.Request, x *exchange, err error) {
	if !x.observed {
		return
	}
	d := Done{
		Params:   r.Params,
		FrontEnd: x.frontEnd,
		Release:  x.release,
		Status:   x.status,
		Duration: time.Since(x.start),
		Err:      err,
	}
	if d.Status == 0 {
		d.Status = 200 // an answer without STDOUT: nginx says 200 too
	}
	log := p.logger()
	if log.Enabled(context.Background(), slog.LevelDebug) {
		log.LogAttrs(context.Background(), slog.LevelDebug, "request",
			slog.String("method", fcgi.Param(r.Params, "REQUEST_METHOD")),
			slog.String("uri", fcgi.Param(r.Params, "REQUEST_URI")),
			slog.Int("status", d.Status),
			slog.Duration("duration", d.Duration),
			slog.String("release", d.Release),
			slog.String("frontend", d.FrontEnd),
		)
	}
	if p.Observer != nil {
		p.Observer.RequestDone(d)
	}
}
