package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/spf13/pflag"

	"github.com/incpathd/incpathd/control"
	"github.com/incpathd/incpathd/inflight"
	"github.com/incpathd/incpathd/internal/lifecycle"
	"github.com/incpathd/incpathd/opcache"
	"github.com/incpathd/incpathd/pin"
	"github.com/incpathd/incpathd/upstream"
)

// releasesConfig holds the flags for watching docroot links and for the
// control endpoint that reports which releases are in use.
type releasesConfig struct {
	watch              bool
	control            string
	controlMode        string
	controlAllowRemote bool
}

func addReleasesFlags(fs *pflag.FlagSet, c *releasesConfig) {
	fs.BoolVar(&c.watch, "watch", true, "watch docroot symlinks (inotify) so a flip is seen by the next request and cached requests make no system call; where watching is not possible, --realpath-every applies")
	fs.StringVar(&c.control, "control", "", "serve the control endpoint (GET /releases, read by incpathd drain) on unix:/path or a loopback host:port; off if empty")
	fs.StringVar(&c.controlMode, "control-mode", "0600", "permissions of a unix control socket (octal)")
	fs.BoolVar(&c.controlAllowRemote, "control-allow-remote", false, "allow --control on a non-loopback TCP address; the endpoint has no authentication")
}

func (c *releasesConfig) validate() error {
	if _, err := strconv.ParseUint(c.controlMode, 8, 32); err != nil {
		return fmt.Errorf("--control-mode: %q is not an octal mode", c.controlMode)
	}
	if c.control != "" {
		if err := control.CheckAddr(c.control, c.controlAllowRemote); err != nil {
			if errors.Is(err, control.ErrNotLoopback) {
				return fmt.Errorf("--control: %w; the endpoint has no authentication: add --control-allow-remote to expose it anyway", err)
			}
			return fmt.Errorf("--control: %w", err)
		}
	}
	return nil
}

// releases is the daemon's watcher, in-flight counts and control endpoint.
type releases struct {
	watcher *pin.Watcher
	tracker *inflight.Tracker // nil without --control or --metrics: nobody would read it
	source  *control.Source   // likewise
	mux     *http.ServeMux    // the control endpoint's routes, nil without --control
	opcache *opcache.Manager  // nil with --opcache=false
	srv     *http.Server
	done    chan struct{}
}

// startReleases starts r's Watcher and, with --control, counting
// requests per release and serving the control endpoint. It must run before
// r's first Resolve.
func startReleases(c *config, r *pin.Resolver, log *slog.Logger, lc *lifecycle.Lifecycle, set *upstream.Set) (*releases, error) {
	rs := &releases{watcher: r.Watcher}
	if c.pattern != "" {
		// Usually the site's docroot link: report its release as in use
		// before the first request names it.
		rs.watcher.Remember(c.pattern)
	}
	// A failure is logged by the Watcher and leaves it in its fallback.
	r.Start()
	if c.control == "" && c.ops.metrics == "" {
		return rs, nil
	}
	// Someone reads the counts: the control endpoint, the metrics, or both.
	rs.tracker = &inflight.Tracker{}
	rs.source = &control.Source{Releases: rs.tracker, Resolver: r, Watcher: rs.watcher,
		Upstreams: set, Audit: &control.Audit{Logger: log}}
	if c.control == "" {
		return rs, nil
	}
	// Through lc, so that a restart hands the socket to the next process:
	// it could not open it itself while this one still serves.
	l, err := lc.Listen(c.control, func() (net.Listener, error) {
		return control.Listen(c.control, fileMode(c.controlMode), c.controlAllowRemote)
	})
	if err != nil {
		rs.watcher.Close()
		return nil, err
	}
	rs.mux = control.NewMux(rs.source.Status)
	(&control.Endpoint{Status: rs.source.Status, Upstreams: set, Audit: rs.source.Audit, CheckTimeout: c.connectTimeout}).Register(rs.mux)
	rs.srv = control.ServerFor(rs.mux)
	rs.srv.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	rs.done = make(chan struct{})
	go rs.serveControl(l, log)
	log.Info("control endpoint listening", "addr", c.control)
	return rs, nil
}

// serveControl is the control endpoint's goroutine.
func (rs *releases) serveControl(l net.Listener, log *slog.Logger) {
	defer close(rs.done)
	if err := rs.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("control endpoint stopped", "err", err)
	}
}

// Close stops the control endpoint and the watcher.
func (rs *releases) Close() {
	if rs.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := rs.srv.Shutdown(ctx); err != nil {
			rs.srv.Close()
		}
		<-rs.done
	}
	rs.watcher.Close()
}

// inFlight reports the requests in flight per release, for the metrics.
func (rs *releases) inFlight() map[string]int64 {
	if rs == nil || rs.tracker == nil {
		return nil
	}
	out := make(map[string]int64)
	for _, r := range rs.tracker.Snapshot() {
		out[r.Path] = r.InFlight
	}
	return out
}

// targets reports where each known docroot link points now, for the
// metrics. It resolves on the file system: once per scrape, not per request.
func (rs *releases) targets() map[string]string {
	if rs == nil || rs.source == nil {
		return nil
	}
	out := make(map[string]string)
	for _, l := range rs.source.Status().Links {
		if l.Target != "" {
			out[l.Docroot] = l.Target
		}
	}
	return out
}
