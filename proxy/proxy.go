// Package proxy pins each FastCGI request to one release and forwards it to
// the application server: request → pin (pin.Pinner) → forward (one
// fcgi.Conn.RoundTrip, replayed once on a fresh connection by the rules of
// replayable) → finish, in that order, with every failure turned into a
// response in one place (fail, classify).
package proxy

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/pin"
	upstreams "github.com/incpathd/incpathd/upstream"
)

// Proxy is an fcgi.Handler that pins requests and forwards them to Pool.
type Proxy struct {
	// Pool is the upstream application server. It must be set unless
	// Upstreams is.
	Pool *fcgi.Pool
	// Upstreams, if not nil, are named pools: each request goes to the one
	// active when it starts (upstreams.Set.Acquire), instead of Pool.
	Upstreams *upstreams.Set
	// Pinner pins each request before it goes upstream. The zero Pinner
	// resolves every front end's docroot on every request.
	Pinner pin.Pinner
	// Logger receives one line per failed request, and at debug level one
	// line per request. If nil, slog.Default().
	Logger *slog.Logger
	// Observer, if not nil, is told about every finished request.
	Observer Observer

	stats Stats
}

// Stats counts what the proxy did.
type Stats struct {
	Requests, Pinned, Passthrough, Failed, Retries atomic.Uint64
	InFlight                                       atomic.Int64
}

// Stats returns the proxy's live counters.
func (p *Proxy) Stats() *Stats { return &p.stats }

func (p *Proxy) logger() *slog.Logger {
	if p.Logger != nil {
		return p.Logger
	}
	return slog.Default()
}

// call is what a request needs besides its params, kept from one request
// to the next so that forwarding one allocates nothing.
type call struct {
	params []fcgi.Pair
	buf    []byte // for the values the rewrite creates
}

var calls = sync.Pool{New: func() any {
	return &call{params: make([]fcgi.Pair, 0, 64)}
}}

// ServeFCGI implements fcgi.Handler.
func (p *Proxy) ServeFCGI(w *fcgi.ResponseWriter, r *fcgi.Request) {
	p.stats.Requests.Add(1)
	p.stats.InFlight.Add(1)
	defer p.stats.InFlight.Add(-1)
	var x exchange
	p.begin(&x)

	c := calls.Get().(*call)
	pinned, err := p.Pinner.Pin(c.params[:0], c.buf, r.Params)
	defer pinned.Done()
	x.frontEnd, x.release = pinned.FrontEnd, pinned.Release
	pool := p.Pool
	if err == nil {
		p.count(&pinned)
		if p.Upstreams != nil {
			u := p.Upstreams.Acquire()
			pool = u.FCGI
			defer u.Release()
		}
		err = p.forward(w, r, pool, pinned.Params, &x)
	}
	clear(pinned.Params)
	c.params, c.buf = pinned.Params[:0], pinned.Buf
	calls.Put(c)
	if err != nil {
		if status := p.fail(w, r, pool, err); status != 0 {
			x.status = status
		} else {
			err = nil // the application's response went out whole
		}
	}
	p.finish(r, &x, err)
}

// requestContext is r.Context(), made on first use. Pool.Get takes a
// context but looks at it only when it must wait or dial; most requests find
// an idle connection and never pay for making one. It must not outlive the
// handler.
type requestContext struct{ r *fcgi.Request }

func (c requestContext) Deadline() (time.Time, bool) { return c.r.Context().Deadline() }
func (c requestContext) Done() <-chan struct{}       { return c.r.Context().Done() }
func (c requestContext) Err() error                  { return c.r.Context().Err() }
func (c requestContext) Value(key any) any           { return c.r.Context().Value(key) }

// OnAbort makes requestContext an fcgi.Aborter: a wait for a free php-fpm
// connection, routine with more web server connections than --max-conns,
// is ended by the request's abort without making its context.
func (c requestContext) OnAbort(f func()) { c.r.OnAbort(f) }

// count counts a pinned or passed-through request in Stats.
func (p *Proxy) count(pinned *pin.Pinned) {
	if pinned.Release != "" {
		p.stats.Pinned.Add(1)
	} else {
		p.stats.Passthrough.Add(1)
	}
}

// forward sends the request upstream and streams the answer back. A
// request that fails before the first response byte may be replayed on a
// fresh connection (see replay). A request that may be replayed so skips
// the liveness check of the first connection, a system call; one that may
// not has it checked.
func (p *Proxy) forward(w *fcgi.ResponseWriter, r *fcgi.Request, pool *fcgi.Pool, params []fcgi.Pair, x *exchange) error {
	bodyDone := r.Body.Done() // before the body streams
	canReplay := replayable(bodyDone, fcgi.Param(r.Params, "REQUEST_METHOD"))
	ctx := requestContext{r}
	for attempt := 0; ; attempt++ {
		var uc *fcgi.Conn
		var reused bool
		var err error
		switch {
		case attempt > 0:
			// Not another idle connection: it may be closing too.
			uc, err = pool.Fresh(ctx)
		case canReplay:
			uc, reused, err = pool.GetUnchecked(ctx)
		default:
			uc, reused, err = pool.Get(ctx)
		}
		if err != nil {
			return err
		}
		started, err := p.roundTrip(w, r, uc, params, x)
		if err == nil {
			pool.Put(uc)
			return nil
		}
		pool.Discard(uc)
		if !started && canReplay && r.Context().Err() == nil && p.replay(pool, attempt, reused, err) {
			p.stats.Retries.Add(1)
			continue
		}
		if started {
			return &startedError{err}
		}
		return err
	}
}

// startedError is a failure after response bytes reached the web server:
// no error page can follow them.
type startedError struct{ error }

func (e *startedError) Unwrap() error { return e.error }

// roundTrip runs one request on uc and streams the answer to w. started
// reports whether the answer began, so that no error page may follow. A nil
// error means END_REQUEST came and uc can be reused.
func (p *Proxy) roundTrip(w *fcgi.ResponseWriter, r *fcgi.Request, uc *fcgi.Conn, params []fcgi.Pair, x *exchange) (started bool, err error) {
	call := fcgi.Call{Params: params, RawParams: r.RawParams, KeepConn: true, Abort: r, Logger: p.logger()}
	if !r.Body.Done() {
		call.Body = &r.Body
	}
	res, err := uc.RoundTrip(requestContext{r}, &call, w)
	if res.Status != 0 {
		x.status = res.Status
	}
	return res.Started, err
}
