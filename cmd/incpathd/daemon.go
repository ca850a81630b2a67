package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/health"
	"github.com/incpathd/incpathd/maintenance"
	"github.com/incpathd/incpathd/metrics"
	"github.com/incpathd/incpathd/proxy"
	"github.com/incpathd/incpathd/upstream"
)

// daemon is what serve runs around the FastCGI server: the sockets and
// restarts, maintenance mode, metrics and health endpoints.
type daemon struct {
	log       *slog.Logger
	lc        *lifecycle
	listeners []net.Listener // where the web server connects
	maint     *maintenance.Mode
	http      *http.Server
	httpAddr  string
	httpDone  chan struct{}
}

// startDaemon sets up everything but the FastCGI serving itself: it may
// wrap srv.Handler (maintenance mode) and set p.Observer (metrics). It owns
// lc from then on, and closes it if it fails.
func startDaemon(c *config, lc *lifecycle, log *slog.Logger, set *upstream.Set, p *proxy.Proxy, srv *fcgi.Server, rel *releases) (_ *daemon, err error) {
	d := &daemon{log: log, lc: lc}
	defer func() {
		if err != nil {
			d.close()
		}
	}()

	if c.ops.maintenanceFile != "" {
		allow, _ := maintenance.ParseAllow(c.ops.maintenanceAllow) // validated
		d.maint = &maintenance.Mode{
			File:       c.ops.maintenanceFile,
			Page:       c.ops.maintenancePage,
			RetryAfter: c.ops.maintenanceRetryAfter,
			Allow:      allow,
			Next:       srv.Handler,
			Logger:     log,
		}
		if err := d.maint.Start(); err != nil {
			return nil, err
		}
		srv.Handler = d.maint
	}

	ml, err := d.lc.metricsListener(c)
	if err != nil {
		return nil, fmt.Errorf("--metrics: %w", err)
	}
	if ml != nil {
		d.startHTTP(c, ml, set, p, rel)
	}

	if d.listeners, err = d.lc.fcgiListeners(c); err != nil {
		return nil, err
	}
	return d, nil
}

// startHTTP serves /metrics, /healthz and /readyz on l.
func (d *daemon) startHTTP(c *config, l net.Listener, set *upstream.Set, p *proxy.Proxy, rel *releases) {
	src := metrics.Sources{
		Proxy:            p,
		Upstreams:        set,
		Resolver:         p.Resolver,
		Version:          version,
		FrontEnds:        append(append([]string(nil), c.docrootSAPIs...), c.realpathSAPIs...),
		ReleasesInFlight: rel.inFlight,
		SymlinkTargets:   rel.targets,
	}
	if d.maint != nil {
		src.Maintenance = d.maint
	}
	m := metrics.New(src)
	p.Observer = m
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.Handle("GET /healthz", health.Live())
	mux.Handle("GET /readyz", ready(set))
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

// ready is called once the FastCGI server accepts on every listener.
func (d *daemon) ready() {
	if err := d.lc.ready(); err != nil {
		d.log.Error("cannot report readiness", "err", err)
	}
}

// stopping is called before the FastCGI server drains. After a handover the
// successor serves the metrics socket too: this process stops answering on
// it at once, so that no scrape reads the old process's numbers.
func (d *daemon) stopping() {
	d.lc.stopping()
	if d.http != nil && d.lc.wasUpgraded() {
		d.http.Close()
	}
}

// shutdown stops the extras after the FastCGI server has drained.
func (d *daemon) shutdown(ctx context.Context) {
	if d.http != nil {
		d.http.Shutdown(ctx)
		<-d.httpDone
	}
}

func (d *daemon) close() {
	if d.http != nil {
		d.http.Close()
		<-d.httpDone
	}
	if d.maint != nil {
		d.maint.Close()
	}
	d.lc.close(d.lc.wasUpgraded())
}
