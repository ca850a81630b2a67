package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/upstream"
)

// The metrics read from counters that incpathd keeps anyway, at scrape time.
var (
	descInFlight = prometheus.NewDesc("incpathd_requests_in_flight",
		"Requests being served right now.", nil, nil)
	descPinned = prometheus.NewDesc("incpathd_requests_pinned_total",
		"Requests pinned to a release.", nil, nil)
	descPassthrough = prometheus.NewDesc("incpathd_requests_passthrough_total",
		"Requests from front ends in neither SAPI list, passed through untouched.", nil, nil)
	descFailed = prometheus.NewDesc("incpathd_requests_failed_total",
		"Requests answered by incpathd with an error, or cut short.", nil, nil)
	descUpConns = prometheus.NewDesc("incpathd_upstream_connections",
		"Open php-fpm connections per pool: idle (kept for reuse) or busy (carrying a request, or being dialed).", []string{"pool", "state"}, nil)
	descDials = prometheus.NewDesc("incpathd_upstream_dials_total",
		"Connections dialed to php-fpm.", poolLabel, nil)
	descDialErrors = prometheus.NewDesc("incpathd_upstream_dial_errors_total",
		"Failed dials to php-fpm.", poolLabel, nil)
	descStale = prometheus.NewDesc("incpathd_upstream_stale_total",
		"Kept connections found closed by php-fpm before reuse (a recycled worker).", poolLabel, nil)
	descQueueTimeouts = prometheus.NewDesc("incpathd_upstream_queue_timeouts_total",
		"Requests that waited --queue-timeout for a free php-fpm connection and got 503.", poolLabel, nil)
	descRetries = prometheus.NewDesc("incpathd_upstream_retries_total",
		"Requests replayed once on a fresh connection after a kept one failed before any answer.", nil, nil)
	descActive = prometheus.NewDesc("incpathd_upstream_active",
		"1 for the pool new requests go to (--upstream NAME=ADDRESS, incpathd upstream use), 0 for the others.", poolLabel, nil)
	descPoolInFlight = prometheus.NewDesc("incpathd_upstream_requests_in_flight",
		"Requests in flight per pool they were sent to.", poolLabel, nil)
	descPoolRequests = prometheus.NewDesc("incpathd_upstream_requests_total",
		"Requests sent to each pool.", poolLabel, nil)
	descDown = prometheus.NewDesc("incpathd_upstream_down",
		"1 while the pool refuses connections and new requests are held (--upstream-hold).", poolLabel, nil)
	descHolding = prometheus.NewDesc("incpathd_upstream_held_requests",
		"Requests waiting now for the pool to accept connections again.", poolLabel, nil)
	descPoolHeld = prometheus.NewDesc("incpathd_upstream_held_total",
		"Requests held because the pool refused connections.", poolLabel, nil)
	descHoldTimeouts = prometheus.NewDesc("incpathd_upstream_hold_timeouts_total",
		"Held requests that gave up at --upstream-hold (502).", poolLabel, nil)
	descHoldRejected = prometheus.NewDesc("incpathd_upstream_hold_rejected_total",
		"Requests answered 503 at once because --upstream-hold-queue requests were held.", poolLabel, nil)
	descHoldSeconds = prometheus.NewDesc("incpathd_upstream_hold_seconds_total",
		"Time requests spent held, summed.", poolLabel, nil)
	descHits = prometheus.NewDesc("incpathd_resolver_cache_hits_total",
		"Docroot resolutions answered from the cache.", nil, nil)
	descMisses = prometheus.NewDesc("incpathd_resolver_cache_misses_total",
		"Docroot resolutions not in the cache (absent or older than --realpath-every).", nil, nil)
	descResolutions = prometheus.NewDesc("incpathd_resolutions_total",
		"Docroots resolved on the file system.", nil, nil)
	descEntries = prometheus.NewDesc("incpathd_resolver_cache_entries",
		"Docroots in the resolution cache.", nil, nil)
	descMaintenance = prometheus.NewDesc("incpathd_maintenance_mode",
		"1 while maintenance mode is on.", nil, nil)
	descMaintAnswered = prometheus.NewDesc("incpathd_maintenance_responses_total",
		"Requests answered with the maintenance page (not counted in incpathd_requests_total).", nil, nil)
	descReleaseInFlight = prometheus.NewDesc("incpathd_release_requests_in_flight",
		"Requests in flight per release directory they are pinned to.", []string{"release"}, nil)
	descSymlink = prometheus.NewDesc("incpathd_symlink_target_info",
		"Always 1; the labels say where each watched symlink points now.", []string{"link", "target"}, nil)
)

var poolLabel = []string{"pool"}

// scraped collects the metrics above from Sources.
type scraped struct{ s Sources }

func (c *scraped) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descInFlight, descPinned, descPassthrough, descFailed,
		descUpConns, descDials, descDialErrors, descStale, descQueueTimeouts, descRetries,
		descActive, descPoolInFlight, descPoolRequests, descDown, descHolding, descPoolHeld,
		descHoldTimeouts, descHoldRejected, descHoldSeconds,
		descHits, descMisses, descResolutions, descEntries,
		descMaintenance, descMaintAnswered, descReleaseInFlight, descSymlink,
	} {
		ch <- d
	}
}

func (c *scraped) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	if p := c.s.Proxy; p != nil {
		st := p.Stats()
		gauge(descInFlight, float64(st.InFlight.Load()))
		counter(descPinned, st.Pinned.Load())
		counter(descPassthrough, st.Passthrough.Load())
		counter(descFailed, st.Failed.Load())
		counter(descRetries, st.Retries.Load())
	}
	c.collectPools(ch)
	if r := c.s.Resolver; r != nil {
		counter(descHits, r.Hits())
		counter(descMisses, r.Misses())
		counter(descResolutions, r.Resolutions())
		gauge(descEntries, float64(r.Len()))
	}
	if m := c.s.Maintenance; m != nil {
		on := 0.0
		if m.On() {
			on = 1
		}
		gauge(descMaintenance, on)
		counter(descMaintAnswered, m.Answered())
	}
	if f := c.s.ReleasesInFlight; f != nil {
		for release, n := range f() {
			gauge(descReleaseInFlight, float64(n), release)
		}
	}
	if f := c.s.SymlinkTargets; f != nil {
		for link, target := range f() {
			gauge(descSymlink, 1, link, target)
		}
	}
}

// collectPools reports each upstream pool under its name: Upstreams, or
// Pool alone as "default".
func (c *scraped) collectPools(ch chan<- prometheus.Metric) {
	if c.s.Upstreams != nil {
		active := c.s.Upstreams.Active()
		for _, p := range c.s.Upstreams.Pools() {
			c.collectPool(ch, p.Name, p.FCGI)
			ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, b2f(p == active), p.Name)
			ch <- prometheus.MustNewConstMetric(descPoolInFlight, prometheus.GaugeValue, float64(p.InFlight()), p.Name)
			ch <- prometheus.MustNewConstMetric(descPoolRequests, prometheus.CounterValue, float64(p.Requests()), p.Name)
		}
		return
	}
	if c.s.Pool != nil {
		c.collectPool(ch, upstream.DefaultName, c.s.Pool)
	}
}

func (c *scraped) collectPool(ch chan<- prometheus.Metric, name string, p *fcgi.Pool) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, name)
	}
	st, h := p.Stats(), p.HoldStats()
	gauge(descUpConns, float64(st.Idle), name, "idle")
	gauge(descUpConns, float64(st.Open-st.Idle), name, "busy")
	counter(descDials, float64(st.Dials))
	counter(descDialErrors, float64(st.DialErrors))
	counter(descStale, float64(st.Stale))
	counter(descQueueTimeouts, float64(st.Timeouts))
	gauge(descDown, b2f(h.Down), name)
	gauge(descHolding, float64(h.Holding), name)
	counter(descPoolHeld, float64(h.Held))
	counter(descHoldTimeouts, float64(h.TimedOut))
	counter(descHoldRejected, float64(h.Rejected))
	counter(descHoldSeconds, h.HeldTime.Seconds())
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
