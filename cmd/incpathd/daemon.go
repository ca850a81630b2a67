package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/fpmcall"
	"github.com/incpathd/incpathd/health"
	"github.com/incpathd/incpathd/internal/lifecycle"
	"github.com/incpathd/incpathd/maintenance"
	"github.com/incpathd/incpathd/metrics"
	"github.com/incpathd/incpathd/pin"
	"github.com/incpathd/incpathd/proxy"
	"github.com/incpathd/incpathd/quiesce"
	"github.com/incpathd/incpathd/upstream"
)

// daemon is the object graph serve runs, built once by newDaemon: the
// upstream pool, the proxy and what sits in front of it (maintenance mode)
// and beside it (releases, metrics and health), the FastCGI server, and the
// lifecycle that owns every socket.
type daemon struct {
	c         *config
	env       lifecycle.Env
	log       *slog.Logger
	lc        *lifecycle.Lifecycle
	set       *upstream.Set   // the named pools (--upstream)
	pool      *fcgi.Pool      // the first: the pool probe's and opcache's
	caller    *fpmcall.Caller // nil without --pool-probe and --opcache, or if it failed
	proxy     *proxy.Proxy
	gate      *quiesce.Gate // holds requests during an opcache reset
	rel       *releases
	maint     *maintenance.Mode // nil without --maintenance-file
	srv       *fcgi.Server
	listeners []net.Listener // where the web server connects
	http      *http.Server   // nil without --metrics
	httpAddr  string
	httpDone  chan struct{}
}

// newDaemon builds the whole graph for c, opening every socket but serving
// on none of them (the metrics aside). On failure it closes what it opened.
func newDaemon(c *config, env lifecycle.Env, log *slog.Logger) (_ *daemon, err error) {
	d := &daemon{c: c, log: log, env: env}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	d.set = newUpstreams(c, log)
	d.pool = d.set.Pools()[0].FCGI
	poolINI := d.startPoolProbe()
	// The lifecycle before any socket: it owns every listening one, the
	// control endpoint's included, so that a restart hands them all on.
	d.lc, err = lifecycle.New(lifecycle.Config{PIDFile: c.ops.pidFile, Logger: log, Env: env})
	if err != nil {
		return nil, err
	}
	resolver := newResolver(c, log)
	if d.rel, err = startReleases(c, resolver, log, d.lc, d.set); err != nil {
		return nil, fmt.Errorf("control endpoint %s: %w", c.control, err)
	}

	// The proxy, the maintenance mode in front of it and the metrics that
	// observe it and read its counters refer to one another: the proxy is
	// allocated first and filled once, below, before anything runs.
	p := new(proxy.Proxy)
	// The gate holds new requests while an opcache reset runs; open, it
	// costs a request two atomic additions. Maintenance answers come
	// before it: they never reach php-fpm.
	d.gate = &quiesce.Gate{Next: p, MaxHold: c.oc.maxPause + 5*time.Second}
	var handler fcgi.Handler = d.gate
	d.rel.opcache = d.newOpcache(p)
	if c.ops.maintenanceFile != "" {
		if d.maint, err = newMaintenance(c, d.gate, log); err != nil {
			return nil, err
		}
		handler = d.maint
	}
	ml, err := d.lc.MetricsListener(metricsListenAddr(c), fileMode(c.ops.metricsMode))
	if err != nil {
		return nil, fmt.Errorf("--metrics: %w", err)
	}
	var observer proxy.Observer // an interface: nil, not a nil *Metrics
	var m *metrics.Metrics
	if ml != nil {
		m = d.newMetrics(p, resolver)
		observer = m
	}
	*p = proxy.Proxy{
		Pool:      d.pool,
		Upstreams: d.set,
		Pinner: pin.Pinner{
			Policy:   pin.Policy{DocrootList: c.docrootSAPIs, RealpathList: c.realpathSAPIs},
			Resolver: resolver,
			Rewrite:  rewriteConfig(c),
			Releases: d.rel.tracker,
			PoolINI:  poolINI,
			Logger:   log,
		},
		Logger:   log,
		Observer: observer,
	}
	d.proxy = p
	if ml != nil {
		d.startHTTP(ml, m)
	}
	d.srv = newServer(c, handler, log)
	if d.listeners, err = d.lc.FCGIListeners(c.listen, fileMode(c.listenMode)); err != nil {
		return nil, fmt.Errorf("--listen %s: %w", c.listen, err)
	}
	return d, nil
}

// newResolver is the docroot resolver --realpath-every, --use-readlink,
// --allow-root and --watch describe.
func newResolver(c *config, log *slog.Logger) *pin.Resolver {
	return &pin.Resolver{
		Every:          c.realpathEvery,
		UseReadlink:    c.useReadlink != "",
		ReadlinkPrefix: c.useReadlink,
		AllowRoots:     c.allowRoots,
		Watcher:        &pin.Watcher{Logger: log, Disabled: !c.watch},
	}
}

// newServer is the FastCGI server the web server connects to, with the
// limits the flags set.
func newServer(c *config, h fcgi.Handler, log *slog.Logger) *fcgi.Server {
	return &fcgi.Server{
		Handler:        h,
		MaxParamsBytes: c.maxParamsBytes,
		MaxParams:      c.maxParams,
		MaxConns:       c.maxClientConns,
		ReadTimeout:    c.readTimeout,
		IdleTimeout:    c.idleTimeout,
		Logger:         log,
	}
}

// fileMode reads an octal mode flag, validated by parse.
func fileMode(s string) os.FileMode {
	m, _ := strconv.ParseUint(s, 8, 32)
	return os.FileMode(m)
}

// metricsListenAddr is --metrics as the lifecycle opens it; empty if off.
func metricsListenAddr(c *config) string {
	addr, _ := metricsAddr(c.ops.metrics) // validated by parse
	return addr
}

// startPoolProbe starts the caller that learns the pool's own ini values,
// and returns its INI, or nil when --pool-probe is off or cannot start.
func (d *daemon) startPoolProbe() func(context.Context, []string) (map[string]*string, error) {
	if !d.c.poolProbe && !d.c.oc.opcache {
		return nil
	}
	getenv := d.env.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	caller, err := startCaller(d.c, getenv, d.set, d.log)
	if err != nil {
		if d.c.oc.opcache {
			d.log.Error("the php helper script cannot be written; --opcache does nothing (warm and eviction say why)", "err", err)
		}
		if d.c.poolProbe {
			d.log.Error("--pool-probe: the pool's ini values cannot be learned; requests that do not set a --pin-ini key are pinned without it, and a value an earlier request set stays in the worker: set --pin-default for each key, or --pool-probe-dir",
				"err", err)
		}
		return nil
	}
	d.caller = caller
	if !d.c.poolProbe {
		return nil
	}
	return caller.INI
}

// newMaintenance starts maintenance mode in front of next.
func newMaintenance(c *config, next fcgi.Handler, log *slog.Logger) (*maintenance.Mode, error) {
	allow, _ := maintenance.ParseAllow(c.ops.maintenanceAllow) // validated
	m := &maintenance.Mode{
		File:       c.ops.maintenanceFile,
		Page:       c.ops.maintenancePage,
		RetryAfter: c.ops.maintenanceRetryAfter,
		Allow:      allow,
		Next:       next,
		Logger:     log,
	}
	if err := m.Start(); err != nil {
		return nil, err
	}
	return m, nil
}

// newMetrics builds the metrics that read p, the pool, the resolver, the
// releases and maintenance mode.
func (d *daemon) newMetrics(p *proxy.Proxy, resolver *pin.Resolver) *metrics.Metrics {
	src := metrics.Sources{
		Proxy:            p,
		Upstreams:        d.set,
		Resolver:         resolver,
		Version:          version,
		FrontEnds:        append(append([]string(nil), d.c.docrootSAPIs...), d.c.realpathSAPIs...),
		ReleasesInFlight: d.rel.inFlight,
		SymlinkTargets:   d.rel.targets,
	}
	if d.maint != nil {
		src.Maintenance = d.maint
	}
	if d.rel.opcache != nil {
		src.Opcache = d.rel.opcache
	}
	return metrics.New(src)
}

// startHTTP serves /metrics, /healthz and /readyz on l.
func (d *daemon) startHTTP(l net.Listener, m *metrics.Metrics) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.Handle("GET /healthz", health.Live())
	mux.Handle("GET /readyz", ready(d.set))
	d.http = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(d.log.Handler(), slog.LevelWarn),
	}
	d.httpAddr = l.Addr().String()
	d.httpDone = make(chan struct{})
	go d.serveHTTP(l)
}

// serveHTTP is the metrics server goroutine.
func (d *daemon) serveHTTP(l net.Listener) {
	defer close(d.httpDone)
	if err := d.http.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		d.log.Error("metrics server stopped", "err", err)
	}
}

// run serves on every listener until ctx ends or a successor takes over,
// then drains within --shutdown-timeout. ready, if not nil, receives the
// first listen address once requests are accepted.
func (d *daemon) run(ctx context.Context, ready chan<- string) int {
	if m := d.rel.opcache; m != nil && d.rel.source != nil {
		octx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); m.Run(octx) }()
		defer func() { cancel(); <-done }()
	}
	errc := make(chan error, len(d.listeners))
	for _, l := range d.listeners {
		go func() { errc <- d.srv.Serve(l) }()
	}
	if err := d.lc.Ready(); err != nil {
		d.log.Error("cannot report readiness", "err", err)
	}
	if ready != nil {
		ready <- d.listeners[0].Addr().String()
	}
	select {
	case err := <-errc:
		d.log.Error("serving stopped", "err", err)
		return 1
	case <-ctx.Done():
	case <-d.lc.Upgraded():
	}
	d.stopping()
	d.log.Info("shutting down", "timeout", d.c.shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), d.c.shutdownTimeout)
	defer cancel()
	if err := d.srv.Shutdown(sctx); err != nil {
		d.log.Warn("shutdown timed out; requests still in flight were cut", "err", err)
	}
	for range d.listeners {
		<-errc
	}
	if d.http != nil {
		d.http.Shutdown(sctx)
		<-d.httpDone
	}
	return 0
}

// stopping is called before the FastCGI server drains. After a handover the
// successor serves the metrics socket too: this process stops answering on
// it at once, so that no scrape reads the old process's numbers.
func (d *daemon) stopping() {
	d.lc.Stopping()
	if d.http != nil && d.lc.WasUpgraded() {
		d.http.Close()
	}
}

// close releases everything newDaemon opened, in the reverse order; it is
// safe on a graph built only in part.
func (d *daemon) close() {
	if d.http != nil {
		d.http.Close()
		<-d.httpDone
	}
	if d.maint != nil {
		d.maint.Close()
	}
	if d.lc != nil {
		// Before the releases: it may hold the control socket too.
		d.lc.Close()
	}
	if d.rel != nil {
		d.rel.Close()
	}
	if d.caller != nil {
		d.caller.Close()
	}
	if d.set != nil {
		d.set.Close()
	}
}
