// Package metrics exports what incpathd does in the Prometheus text format:
// requests by status class and front end with their durations, observed as
// they finish (Metrics is a proxy.Observer), and the counters the proxy, the
// upstream pool and the docroot resolver keep anyway, read only when
// Prometheus scrapes.
package metrics

import (
	"errors"
	"net/http"
	"runtime"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/pin"
	"github.com/incpathd/incpathd/proxy"
	"github.com/incpathd/incpathd/upstream"
)

// Sources are where the scraped values come from. Every field may be nil:
// its metrics are then left out.
type Sources struct {
	Proxy *proxy.Proxy
	// Pool is the upstream pool, reported as "default"; Upstreams, if not
	// nil, replaces it with every named pool.
	Pool      *fcgi.Pool
	Upstreams *upstream.Set
	Resolver  *pin.Resolver
	// Maintenance reports maintenance mode.
	Maintenance Maintenance

	// ReleasesInFlight returns the requests in flight per release
	// directory, for incpathd_release_requests_in_flight.
	ReleasesInFlight func() map[string]int64
	// SymlinkTargets returns the current target of each watched symlink,
	// for incpathd_symlink_target_info.
	SymlinkTargets func() map[string]string
	// Opcache, if not nil, gives the incpathd_opcache_* metrics.
	Opcache Opcache

	// Version goes into incpathd_build_info.
	Version string
	// FrontEnds are front-end names to count under their own label besides
	// the usual web servers (those of --docroot-sapi-list and
	// --realpath-sapi-list); every other name counts as "other", so that a
	// front end sending made-up names cannot grow the label set.
	FrontEnds []string
}

// Maintenance is what the metrics read from maintenance mode.
type Maintenance interface {
	// On reports whether maintenance mode is on.
	On() bool
	// Answered counts the requests answered with the maintenance page.
	Answered() uint64
}

// wellKnown are the front ends counted under their own name without
// configuration: the names pin.Name returns for the usual web servers.
var wellKnown = []string{"nginx", "apache", "lighttpd", "caddy", "openresty", "angie", "freenginx", "h2o"}

// maxFrontEnds bounds the front-end label values taken from Sources.
const maxFrontEnds = 32

const (
	otherFrontEnd = "other"
	nClasses      = 5 // 1xx to 5xx
)

var classes = [nClasses]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// Metrics counts requests and exports them with the Sources. Create it with
// New; it is safe for concurrent use.
type Metrics struct {
	reg       *prometheus.Registry
	frontEnds []string                       // label values; the last is "other"
	requests  [][nClasses]prometheus.Counter // by front end, then class
	duration  prometheus.Histogram
	resolveVs [2]prometheus.Counter // failures: unresolvable, outside_root
	errors    *releaseErrors
}

// New registers incpathd's metrics, Go's runtime metrics and the process's
// in a registry of its own.
func New(s Sources) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.frontEnds = frontEndLabels(s.FrontEnds)

	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "incpathd_requests_total",
		Help: "Requests finished, by front end (unknown names count as \"other\") and HTTP status class.",
	}, []string{"frontend", "code"})
	m.requests = make([][nClasses]prometheus.Counter, len(m.frontEnds))
	for i, fe := range m.frontEnds {
		for j, c := range classes {
			// Made once here: WithLabelValues hashes its labels on every call.
			m.requests[i][j] = reqs.WithLabelValues(fe, c)
		}
	}
	m.duration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "incpathd_request_duration_seconds",
		Help:    "Time from the start of a request to the end of its response.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	})
	fails := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "incpathd_resolution_failures_total",
		Help: "Requests refused because their docroot could not be resolved (unresolvable: 503) or resolved outside --allow-root (outside_root: 403).",
	}, []string{"reason"})
	m.resolveVs = [2]prometheus.Counter{fails.WithLabelValues("unresolvable"), fails.WithLabelValues("outside_root")}

	m.errors = newReleaseErrors()
	m.reg.MustRegister(reqs, m.duration, fails, m.errors.vec,
		&scraped{s: s},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "incpathd_build_info",
			Help:        "Always 1; the labels say which incpathd runs.",
			ConstLabels: prometheus.Labels{"version": s.Version, "goversion": runtime.Version()},
		}, func() float64 { return 1 }),
	)
	if s.Opcache != nil {
		m.reg.MustRegister(&opcacheCollector{o: s.Opcache})
	}
	return m
}

// frontEndLabels lists the label values: the well-known names, the
// configured ones, and "other".
func frontEndLabels(extra []string) []string {
	names := append([]string(nil), wellKnown...)
	for _, n := range extra {
		n = strings.ToLower(strings.TrimSpace(n))
		if n == "" || n == "*" || n == otherFrontEnd || len(names) >= maxFrontEnds {
			continue
		}
		dup := false
		for _, k := range names {
			dup = dup || k == n
		}
		if !dup {
			names = append(names, n)
		}
	}
	return append(names, otherFrontEnd)
}

// RequestDone implements proxy.Observer: two atomic adds and a short search,
// no allocation.
func (m *Metrics) RequestDone(d proxy.Done) {
	fe := len(m.frontEnds) - 1 // other
	for i, n := range m.frontEnds[:fe] {
		if n == d.FrontEnd {
			fe = i
			break
		}
	}
	c := class(d.Status)
	m.requests[fe][c].Inc()
	if c == nClasses-1 {
		m.errors.add(d.Release)
	}
	m.duration.Observe(d.Duration.Seconds())
	if d.Err != nil {
		switch {
		case errors.Is(d.Err, pin.ErrUnresolvable):
			m.resolveVs[0].Inc()
		case errors.Is(d.Err, pin.ErrOutsideRoot):
			m.resolveVs[1].Inc()
		}
	}
}

// class maps a status to its index in classes; out-of-range codes go to the
// nearest class.
func class(status int) int {
	return min(max(status/100, 1), nClasses) - 1
}

// Registry is where the metrics are registered, for tests and for adding
// more.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus text format (or what the
// scraper asks for).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
