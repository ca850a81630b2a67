package pin

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/inflight"
	"github.com/incpathd/incpathd/rewrite"
)

// ErrNoDocroot: a request the Policy pins came without DOCUMENT_ROOT, so
// there is nothing to pin it to.
var ErrNoDocroot = errors.New("pin: request has no DOCUMENT_ROOT")

// Pinner owns the whole decision for one request: which front end sent it,
// what the Policy says about that front end, whether its paths are safe,
// which release its docroot resolves to (cached and watched by Resolver),
// whether that lies within the allowed roots, the count on the release
// against a racing flip, and the rewrite of its params. Pin is its one
// entry point.
//
// The zero Pinner resolves every front end's docroot with a full realpath
// on every request and counts nothing. Set the fields before the first Pin
// and do not change them afterwards.
type Pinner struct {
	// Policy decides, per front end, whether DOCUMENT_ROOT is trusted,
	// resolved, or left alone. The zero Policy resolves every front end.
	Policy Policy
	// Resolver resolves docroots for front ends in the realpath list, and
	// holds AllowRoots. If nil, every request is resolved anew, with no
	// roots.
	Resolver *Resolver
	// Rewrite says how params are pinned. The first Pin prepares it
	// (rewrite.Config.Prepare): later changes to it are not seen.
	Rewrite rewrite.Config
	// Releases, if not nil, counts the requests in flight per release (the
	// resolved docroot), for drains.
	Releases *inflight.Tracker
	// PoolINI, if not nil, returns the php-fpm pool's own values of ini
	// keys (nil for a key PHP does not know), as fpmcall.Caller.INI does.
	// Keys of Rewrite.PinINI that Rewrite gives no default are learned
	// with it before the first pinned request and become their defaults
	// (see poolDefaults).
	PoolINI func(ctx context.Context, keys []string) (map[string]*string, error)
	// Logger receives what learning the pool's values did. If nil,
	// slog.Default().
	Logger *slog.Logger

	initOnce sync.Once
	prepared *rewrite.Prepared // Rewrite's, made by the first Pin
	learn    poolDefaults
}

// Pinned is a request as Pin left it.
type Pinned struct {
	// Params are dst with the request's params appended, pinned or passed
	// through. They may point into Buf.
	Params []fcgi.Pair
	// Buf is the buffer given to Pin, grown with the values the rewrite
	// made: give it to the next Pin once Params are no longer used.
	Buf []byte
	// FrontEnd is the front end's name (see Name), set even on failure.
	FrontEnd string
	// Release is the directory the request runs in, "" if it was passed
	// through.
	Release string

	counter *inflight.Counter
}

// Done gives back the request's count on its release. Call it once the
// request has ended upstream: a drain that saw the count drop may delete
// the release.
func (p *Pinned) Done() { p.counter.Done() }

// uncached is the Resolver of a Pinner without one: every resolution
// anew, which keeps no state but counters.
var uncached Resolver

func (p *Pinner) resolver() *Resolver {
	if p.Resolver != nil {
		return p.Resolver
	}
	return &uncached
}

func (p *Pinner) logger() *slog.Logger {
	if p.Logger != nil {
		return p.Logger
	}
	return slog.Default()
}

// repinAttempts bounds how often a request is pinned again because its
// release was dropped from the cache while it was being counted.
const repinAttempts = 3

// Pin pins the request with params in, appending its params to dst and
// the values it makes to buf.
//
// The request is counted in flight on its release. The Resolver may drop
// the release (a flip just seen) between the resolution and the count; a
// drain that then found the release idle and no longer cached would let it
// be deleted under this request. So the cache is checked again after the
// count is visible, and a request whose release was dropped is pinned
// again: either the drain sees the count, or the request never uses the
// old release. With the same reasoning, Done must come only after the
// request has ended upstream.
func (p *Pinner) Pin(dst []fcgi.Pair, buf []byte, in []fcgi.Pair) (Pinned, error) {
	p.initOnce.Do(p.init)
	for attempt := 1; ; attempt++ {
		out, docroot, err := p.pin(dst, &buf, in)
		if err != nil {
			return out, err
		}
		if p.Releases != nil && out.Release != "" {
			out.counter = p.Releases.Acquire(out.Release)
			if docroot != "" && attempt < repinAttempts && p.resolver().Stale(docroot, out.Release) {
				out.counter.Done()
				clear(out.Params)
				dst = out.Params[:0]
				continue
			}
		}
		return out, nil
	}
}

// resolve returns the release the docroot from resolves to. A docroot
// the cache holds was checked (checkDocroot) when it was resolved, and is
// not checked again; any other is checked before the Resolver makes a
// system call with it.
func (p *Pinner) resolve(from string) (string, error) {
	r := p.resolver()
	if to, ok := r.cachedSafe(from); ok {
		return to, nil
	}
	if err := checkDocroot(from); err != nil {
		return "", err
	}
	return r.Resolve(from)
}

// pin decides the request's release and rewrites its params into dst,
// once. docroot is the one the Resolver resolved to the release, "" if it
// did not.
func (p *Pinner) pin(dst []fcgi.Pair, buf *[]byte, in []fcgi.Pair) (out Pinned, docroot string, err error) {
	name, from := nameAndDocroot(in)
	out = Pinned{Params: dst, FrontEnd: name}
	defer func() { out.Buf = *buf }()
	mode := p.Policy.Mode(out.FrontEnd)
	if mode == Passthrough {
		out.Params, err = p.passthrough(dst, in)
		return out, "", err
	}
	if from == "" {
		return out, "", ErrNoDocroot
	}
	to := from
	if mode == Realpath {
		if to, err = p.resolve(from); err != nil {
			return out, "", err
		}
		docroot = from
	} else if err := checkDocroot(from); err != nil {
		return out, "", err
	}
	params, b, err := p.rewriteConfig(from, to).RewriteBuffer(dst, in, from, to, *buf)
	*buf = b
	if err != nil {
		out.Params = params // for the caller to clear
		return out, "", err
	}
	if err := p.checkAllowed(to, params[len(dst):]); err != nil {
		clear(params[len(dst):])
		return out, "", err
	}
	out.Params, out.Release = params, to
	return out, docroot, nil
}
