// Package proxy pins each FastCGI request to one release and forwards it to
// the application server: request → pin (sapi, rewrite) → upstream →
// response, in that order, with every failure turned into a response in one
// place (fail).
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/inflight"
	"github.com/incpathd/incpathd/rewrite"
	"github.com/incpathd/incpathd/sapi"
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
	// Policy decides, per front end, whether DOCUMENT_ROOT is trusted,
	// resolved, or left alone.
	Policy sapi.Policy
	// Resolver resolves docroots for front ends in the realpath list. If
	// nil, a Resolver without cache.
	Resolver *sapi.Resolver
	// Rewrite says how params are pinned.
	Rewrite rewrite.Config
	// Logger receives one line per failed request, and at debug level one
	// line per request. If nil, slog.Default().
	Logger *slog.Logger
	// Releases, if not nil, counts the requests in flight per release (the
	// resolved docroot), for drains.
	Releases *inflight.Tracker
	// Observer, if not nil, is told about every finished request.
	Observer Observer
	// PoolINI, if not nil, returns the php-fpm pool's own values of ini
	// keys (nil for a key PHP does not know), as fpmcall.Caller.INI does.
	// Keys of Rewrite.PinINI that Rewrite gives no default are learned
	// with it before the first pinned request and become their defaults
	// (see poolDefaults).
	PoolINI func(ctx context.Context, keys []string) (map[string]*string, error)

	initOnce sync.Once
	stats    Stats
	learn    poolDefaults
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

func (p *Proxy) init() {
	if p.Resolver == nil {
		p.Resolver = &sapi.Resolver{}
	}
	p.initPoolDefaults()
}

// call is what a request needs besides its params, kept from one request
// to the next so that forwarding one allocates nothing.
type call struct {
	params []fcgi.Pair
	buf    []byte // for the values the rewrite creates
	// upstream is the connection of the round trip under way; cut, made
	// once, is what an abort runs to break off the read from it.
	upstream net.Conn
	cut      func()
}

var calls = sync.Pool{New: func() any {
	c := &call{params: make([]fcgi.Pair, 0, 64)}
	c.cut = func() { c.upstream.SetDeadline(aLongTimeAgo) }
	return c
}}

// ServeFCGI implements fcgi.Handler.
func (p *Proxy) ServeFCGI(w *fcgi.ResponseWriter, r *fcgi.Request) {
	p.initOnce.Do(p.init)
	p.stats.Requests.Add(1)
	p.stats.InFlight.Add(1)
	defer p.stats.InFlight.Add(-1)
	var x exchange
	p.begin(&x)

	c := calls.Get().(*call)
	x.buf = c.buf
	params, counter, err := p.pinCounted(c.params[:0], r.Params, &x)
	defer counter.Done()
	pool := p.Pool
	if err == nil {
		if p.Upstreams != nil {
			u := p.Upstreams.Acquire()
			pool = u.FCGI
			defer u.Release()
		}
		err = p.forward(w, r, c, pool, params, &x)
	}
	clear(params)
	c.params, c.buf = params[:0], x.buf
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

// pinned says where a request was pinned: release is the docroot it runs
// in ("" if not pinned); docroot is the one resolved to it, if the Resolver
// did.
type pinned struct{ docroot, release string }

// pin decides the request's release and rewrites its params into dst. It
// does not count the request as pinned: pinCounted may pin it again.
func (p *Proxy) pin(dst, in []fcgi.Pair, x *exchange) ([]fcgi.Pair, pinned, error) {
	name := sapi.Name(in)
	x.frontEnd = name
	mode := p.Policy.Mode(name)
	if mode == sapi.Passthrough {
		out, err := p.passthrough(dst, in)
		if err != nil {
			return dst, pinned{}, err
		}
		p.stats.Passthrough.Add(1)
		return out, pinned{}, nil
	}
	from := param(in, "DOCUMENT_ROOT")
	if from == "" {
		return dst, pinned{}, &Error{Status: 500, Reason: "no DOCUMENT_ROOT from the web server", Err: errNoDocroot}
	}
	if err := checkDocroot(from); err != nil {
		return dst, pinned{}, err
	}
	to := from
	pin := pinned{release: from}
	if mode == sapi.Realpath {
		var err error
		if to, err = p.Resolver.Resolve(from); err != nil {
			return dst, pinned{}, err
		}
		pin = pinned{docroot: from, release: to}
	}
	out, buf, err := p.rewriteConfig(from, to).RewriteBuffer(dst, in, from, to, x.buf)
	x.buf = buf
	if err != nil {
		return out, pinned{}, err
	}
	if err := p.checkAllowed(to, out[len(dst):]); err != nil {
		clear(out[len(dst):])
		return dst, pinned{}, err
	}
	x.release = to
	return out, pin, nil
}

var errNoDocroot = errors.New("proxy: request has no DOCUMENT_ROOT")

// param returns the last value of the param called name: php-fpm's rule
// for duplicates.
func param(params []fcgi.Pair, name string) string {
	for i := len(params) - 1; i >= 0; i-- {
		if params[i].Name == name {
			return params[i].Value
		}
	}
	return ""
}

// forward sends the request upstream and streams the answer back. A
// request that fails before the first response byte may be replayed on a
// fresh connection (see replay). A request that may be replayed so skips
// the liveness check of the first connection, a system call; one that may
// not has it checked.
func (p *Proxy) forward(w *fcgi.ResponseWriter, r *fcgi.Request, c *call, pool *fcgi.Pool, params []fcgi.Pair, x *exchange) error {
	bodyDone := r.Body.Done() // before the body streams
	canReplay := replayable(bodyDone, param(r.Params, "REQUEST_METHOD"))
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
		started, err := p.roundTrip(w, r, c, uc, params, x)
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

// roundTrip runs one request on uc. started reports whether any response
// record was passed to the web server. A nil error means END_REQUEST came
// and uc can be reused.
func (p *Proxy) roundTrip(w *fcgi.ResponseWriter, r *fcgi.Request, c *call, uc *fcgi.Conn, params []fcgi.Pair, x *exchange) (started bool, err error) {
	nc := uc.NetConn()
	nc.SetDeadline(time.Time{})
	// A new id for every request on the connection: one request at a time
	// runs on each, but a record an application writes after END_REQUEST
	// must not pass for the next request's answer (see Conn.NextID).
	id := uc.NextID()
	uc.W.WriteBeginRequest(id, fcgi.RoleResponder, fcgi.FlagKeepConn)
	if err := uc.W.WriteParams(id, params); err != nil {
		return false, err
	}
	var body *bodyCopy
	if r.Body.Done() {
		uc.W.WriteRecord(fcgi.TypeStdin, id, nil)
	} else {
		body = &bodyCopy{id: id, done: make(chan struct{})}
	}
	if err := uc.W.Flush(); err != nil {
		return false, fmt.Errorf("%w: sending request: %w", ErrUpstream, err)
	}
	if body != nil {
		go body.run(r, uc)
		defer body.wait(r, nc)
	}
	// An abort from the web server unblocks the upstream read below. Once
	// OnAbort(nil) returns, the cut is neither running nor to come: it
	// cannot hit the connection after it went back to the pool and on to
	// another request, which would then fail for no reason (the soak test
	// saw it with context.AfterFunc).
	c.upstream = nc
	r.OnAbort(c.cut)
	defer func() {
		r.OnAbort(nil)
		c.upstream = nil
	}()

	for {
		h, content, err := uc.R.Next()
		if err != nil {
			if cause := context.Cause(r.Context()); cause != nil {
				return started, cause
			}
			if body != nil && body.failed() != nil {
				return started, body.failed()
			}
			return started, fmt.Errorf("%w: reading response: %w", ErrUpstream, err)
		}
		if h.ID != id {
			if seen := uc.OutOfStep(); uc.Late(h.ID) {
				// Written after the previous request's END_REQUEST, once the
				// connection was back in the pool: no part of this answer.
				// Skipped, and the connection closed after this request;
				// logged once, however many come.
				if seen {
					continue
				}
				p.logger().Warn("application wrote after the end of a request; its connection is closed", "upstream", p.Pool.Address, "type", h.Type, "id", h.ID)
				continue
			}
			return started, fmt.Errorf("%w: record for request %d, want %d", ErrUpstream, h.ID, id)
		}
		switch h.Type {
		case fcgi.TypeStdout, fcgi.TypeStderr:
			if len(content) == 0 {
				continue
			}
			started = true
			if h.Type == fcgi.TypeStdout {
				x.stdout(content)
			}
			if err := w.WriteRecord(h.Type, content); err != nil {
				return started, fmt.Errorf("%w: %w", fcgi.ErrClientGone, err)
			}
			// Flush when php-fpm has nothing more queued, so a streamed page
			// reaches the browser without a write per record.
			if uc.R.Buffered() == 0 {
				if err := w.Flush(); err != nil {
					return started, fmt.Errorf("%w: %w", fcgi.ErrClientGone, err)
				}
			}
		case fcgi.TypeEndRequest:
			end, err := fcgi.ParseEndRequest(content)
			if err != nil {
				return started, fmt.Errorf("%w: %w", ErrUpstream, err)
			}
			if body != nil && !body.finished() && body.last.Load() {
				// The answer overtook the copier's last step: wait for it,
				// boundedly (a peer that stopped reading could block it).
				t := time.NewTimer(time.Second)
				select {
				case <-body.done:
				case <-t.C:
				}
				t.Stop()
			}
			if body != nil && !body.finished() {
				// The script answered without reading its whole body: stop
				// reading it from the web server; this connection is out of
				// step with php-fpm, so it is not reused.
				r.StopBody()
				body.wait(r, nc)
				w.End(end.AppStatus, end.ProtocolStatus)
				return true, errBodyUnread
			}
			if err := w.End(end.AppStatus, end.ProtocolStatus); err != nil {
				return true, fmt.Errorf("%w: %w", fcgi.ErrClientGone, err)
			}
			if uc.R.Buffered() > 0 {
				// More came with END_REQUEST: the answer went out whole, and
				// Pool.Put closes the connection rather than let the next
				// request read it.
				p.logger().Warn("application wrote after the end of a request; its connection is closed", "upstream", p.Pool.Address, "id", id)
			}
			return true, nil
		default:
			return started, fmt.Errorf("%w: unexpected record type %d", ErrUpstream, h.Type)
		}
	}
}

var (
	// ErrUpstream wraps a failure talking to the application server.
	ErrUpstream = errors.New("proxy: upstream failed")
	// errBodyUnread: the application ended a request before its body was
	// sent whole; the response went out, the upstream connection cannot be
	// reused.
	errBodyUnread = errors.New("proxy: application ended before reading the body")
)

var aLongTimeAgo = time.Unix(1, 0)

// bodyCopy streams a request body to the upstream on its own goroutine, so
// that an application answering before it has read everything cannot
// deadlock against us.
type bodyCopy struct {
	id   uint16 // the upstream request id
	done chan struct{}
	err  atomic.Pointer[error]
	ok   atomic.Bool
	last atomic.Bool // the whole body was read; its end is being sent
}

// run is the body copier goroutine.
func (b *bodyCopy) run(r *fcgi.Request, uc *fcgi.Conn) {
	defer close(b.done)
	for {
		chunk, err := r.Body.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			b.fail(fmt.Errorf("reading request body: %w", err))
			uc.NetConn().SetDeadline(aLongTimeAgo)
			return
		}
		// Flush each chunk: the application may answer on what it has
		// (and a slow upload must reach it as it comes).
		uc.W.WriteRecord(fcgi.TypeStdin, b.id, chunk)
		if err := uc.W.Flush(); err != nil {
			b.fail(fmt.Errorf("%w: sending request body: %w", ErrUpstream, err))
			return
		}
	}
	// Say so before the end of the body goes out: the application may
	// answer the moment it arrives, before this goroutine runs again.
	b.last.Store(true)
	uc.W.WriteRecord(fcgi.TypeStdin, b.id, nil)
	if err := uc.W.Flush(); err != nil {
		b.fail(fmt.Errorf("%w: sending request body: %w", ErrUpstream, err))
		return
	}
	b.ok.Store(true)
}

func (b *bodyCopy) fail(err error) { b.err.Store(&err) }

func (b *bodyCopy) failed() error {
	if e := b.err.Load(); e != nil {
		return *e
	}
	return nil
}

func (b *bodyCopy) finished() bool {
	select {
	case <-b.done:
		return b.ok.Load()
	default:
		return false
	}
}

// wait ends the copier: if it still runs, its upstream writes are cut off.
func (b *bodyCopy) wait(r *fcgi.Request, nc interface{ SetDeadline(time.Time) error }) {
	select {
	case <-b.done:
		return
	default:
	}
	r.StopBody()
	nc.SetDeadline(aLongTimeAgo)
	<-b.done
}
