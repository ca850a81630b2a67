package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/incpathd/incpathd/control"
	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/fpmcall"
	"github.com/incpathd/incpathd/opcache"
	"github.com/incpathd/incpathd/proxy"
	"github.com/incpathd/incpathd/upstream"
)

// opcacheConfig is what the opcache flags decide.
type opcacheConfig struct {
	opcache    bool
	checkEvery time.Duration
	maxPause   time.Duration
}

func addOpcacheFlags(fs *pflag.FlagSet, c *opcacheConfig) {
	fs.BoolVar(&c.opcache, "opcache", true, "manage php-fpm's opcache: incpathd warm, eviction of drained releases, a reset with requests held when it is full (needs the script of --pool-probe-dir)")
	fs.DurationVar(&c.checkEvery, "opcache-check-every", 2*time.Second, "how often drained releases are looked for, to evict their opcache entries")
	fs.DurationVar(&c.maxPause, "opcache-max-pause", 10*time.Second, "longest time new requests are held for an opcache reset (waiting for requests in flight takes half at most, or the reset is called off)")
}

func (c *opcacheConfig) validate() error {
	if c.checkEvery <= 0 {
		return fmt.Errorf("--opcache-check-every: %v must be positive", c.checkEvery)
	}
	if c.maxPause < 100*time.Millisecond {
		return fmt.Errorf("--opcache-max-pause: %v is under 100ms", c.maxPause)
	}
	return nil
}

// checkHelperDir refuses a --pool-probe-dir inside a docroot: the web
// server could route requests to the script there (it would answer them
// 404, but it has no business being reachable).
func checkHelperDir(dir string, roots []string, pattern string) error {
	if dir == "" {
		return nil
	}
	for _, r := range append(append([]string(nil), roots...), pattern) {
		if r != "" && (dir == r || strings.HasPrefix(dir, strings.TrimSuffix(r, "/")+"/")) {
			return fmt.Errorf("--pool-probe-dir: %s lies inside %s, where the web server serves files; give a directory outside every docroot", dir, r)
		}
	}
	return nil
}

// startCaller writes the PHP helper script, in --pool-probe-dir or the
// first default directory incpathd can write.
func startCaller(c *config, getenv func(string) string, set *upstream.Set, log *slog.Logger) (*fpmcall.Caller, error) {
	caller := &fpmcall.Caller{
		Pool:       set.Pools()[0].FCGI,
		Active:     func() *fcgi.Pool { return set.Active().FCGI },
		Dir:        c.poolProbeDir,
		Candidates: fpmcall.DefaultDirs(c.up.pools[0].addr, getenv),
		Timeout:    c.connectTimeout + 5*time.Second,
	}
	if err := caller.Start(); err != nil {
		return nil, err
	}
	log.Info("php helper script written; php-fpm must read it at this path", "path", caller.Path())
	return caller, nil
}

// newOpcache builds the opcache manager (nil with --opcache=false), and
// adds its routes and the status view to the control endpoint. d.run runs
// the manager's eviction loop. Without the helper script the manager
// reports why on every call.
func (d *daemon) newOpcache(p *proxy.Proxy) *opcache.Manager {
	var m *opcache.Manager
	if d.c.oc.opcache {
		var php opcache.PHP = noHelper{}
		if d.caller != nil {
			php = d.caller
		}
		m = &opcache.Manager{
			PHP:      php,
			Gate:     d.gate,
			Live:     d.rel.live,
			Busy:     d.rel.busy,
			Logger:   d.log,
			Interval: d.c.oc.checkEvery,
			MaxPause: d.c.oc.maxPause,
		}
	}
	if d.rel.mux != nil {
		rt := control.Routes{
			Status:   d.rel.source.Status,
			Upstream: upstreamView(d.set, d.rel.source.Audit),
			Audit:    d.rel.source.Audit,
			InFlight: func() int64 { return p.Stats().InFlight.Load() },
		}
		if m != nil {
			rt.Opcache = m
		}
		rt.Register(d.rel.mux)
	}
	return m
}

// noHelper stands for the helper script when it could not be written.
type noHelper struct{}

var errNoHelper = fmt.Errorf("%w: incpathd could not write its PHP script (see the log at start; set --pool-probe-dir to a directory php-fpm reads at the same path)", fpmcall.ErrCall)

func (noHelper) OpcacheStatus(context.Context, []string) (*fpmcall.OpcacheStatus, error) {
	return nil, errNoHelper
}
func (noHelper) Warm(context.Context, string, time.Duration) (*fpmcall.WarmResult, error) {
	return nil, errNoHelper
}
func (noHelper) Invalidate(context.Context, string) (fpmcall.Usage, error) {
	return fpmcall.Usage{}, errNoHelper
}
func (noHelper) Reset(context.Context) error { return errNoHelper }

// upstreamView reports the php-fpm side for the status view: the active
// pool's connections, every pool (upstream.PoolStatus) and the recent
// control actions.
func upstreamView(set *upstream.Set, audit *control.Audit) func() *control.Upstream {
	return func() *control.Upstream {
		active := set.Active()
		st := active.FCGI.Stats()
		u := &control.Upstream{Address: active.FCGI.Address, MaxConns: active.FCGI.MaxConns, Dials: st.Dials, DialErrors: st.DialErrors}
		u.Conns.Open, u.Conns.Idle, u.Conns.Busy = st.Open, st.Idle, st.Open-st.Idle
		u.Pools, _ = json.Marshal(set.Status())
		if acts := audit.Recent(); len(acts) > 0 {
			u.Actions, _ = json.Marshal(acts)
		}
		return u
	}
}

// live returns the releases new requests go to: where each docroot link
// points, and what new requests are still pinned to.
func (rs *releases) live() []string {
	if rs.source == nil {
		return nil
	}
	seen := map[string]bool{}
	var out []string
	for _, l := range rs.source.Status().Links {
		for _, p := range []string{l.Target, l.Cached} {
			if p != "" && !seen[p] {
				seen[p] = true
				out = append(out, filepath.Clean(p))
			}
		}
	}
	return out
}

// busy is the drain condition of incpathd drain for one release.
func (rs *releases) busy(release string) []string {
	if rs.source == nil {
		return nil
	}
	st := rs.source.Status()
	return st.Busy(release)
}
