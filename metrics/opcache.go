package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/incpathd/incpathd/opcache"
)

// Opcache is what the opcache metrics read: opcache.Manager.
type Opcache interface {
	Snapshot(ctx context.Context) *opcache.Snapshot
}

// The opcache metrics, read from one Snapshot per scrape (a request to
// php-fpm, reused for a second).
var (
	descOpcacheUp = prometheus.NewDesc("incpathd_opcache_up",
		"1 when php-fpm's opcache could be read through incpathd's helper script.", nil, nil)
	descOpcacheMemory = prometheus.NewDesc("incpathd_opcache_memory_bytes",
		"Opcache shared memory: used, free, wasted (scripts invalidated or replaced, freed only by a restart).", []string{"state"}, nil)
	descOpcacheSlotsUsed = prometheus.NewDesc("incpathd_opcache_hash_slots_used",
		"Opcache hash table entries in use (num_cached_keys); invalidated scripts keep theirs until a restart.", nil, nil)
	descOpcacheSlots = prometheus.NewDesc("incpathd_opcache_hash_slots_total",
		"Opcache hash table size (max_cached_keys: opcache.max_accelerated_files rounded up to a prime).", nil, nil)
	descOpcacheFull = prometheus.NewDesc("incpathd_opcache_cache_full",
		"1 when opcache reports cache_full: new scripts are not cached.", nil, nil)
	descOpcacheHits = prometheus.NewDesc("incpathd_opcache_hits_total",
		"Opcache hits since its last restart.", nil, nil)
	descOpcacheMisses = prometheus.NewDesc("incpathd_opcache_misses_total",
		"Opcache misses since its last restart.", nil, nil)
	descOpcacheRestarts = prometheus.NewDesc("incpathd_opcache_restarts_total",
		"Opcache restarts by reason: manual (opcache_reset, incpathd's resets), hash (table full), oom (memory full).", []string{"reason"}, nil)
	descOpcacheScripts = prometheus.NewDesc("incpathd_opcache_release_scripts",
		"Scripts opcache holds per release incpathd knows, with the release's state (live, warmed, draining, drained, evicted).", []string{"release", "state"}, nil)
	descOpcacheBytes = prometheus.NewDesc("incpathd_opcache_release_bytes",
		"Opcache memory the scripts of each known release take.", []string{"release", "state"}, nil)
	descOpcacheFiles = prometheus.NewDesc("incpathd_opcache_release_files",
		"PHP files the last warm found in each release it warmed.", []string{"release", "state"}, nil)
	descWarms = prometheus.NewDesc("incpathd_opcache_warms_total",
		"Warms run (incpathd warm, activate --warm).", nil, nil)
	descWarmFailures = prometheus.NewDesc("incpathd_opcache_warm_failures_total",
		"Warms that failed (no opcache, helper unreadable, not a directory).", nil, nil)
	descWarmSeconds = prometheus.NewDesc("incpathd_opcache_warm_seconds_total",
		"Time spent warming.", nil, nil)
	descLastWarm = prometheus.NewDesc("incpathd_opcache_last_warm_seconds",
		"How long the last warm took.", nil, nil)
	descEvictions = prometheus.NewDesc("incpathd_opcache_evictions_total",
		"Drained releases whose scripts were invalidated.", nil, nil)
	descEvictSeconds = prometheus.NewDesc("incpathd_opcache_evict_seconds_total",
		"Time spent invalidating drained releases.", nil, nil)
	descResets = prometheus.NewDesc("incpathd_opcache_resets_total",
		"Opcache resets incpathd made with requests held.", nil, nil)
	descResetsOff = prometheus.NewDesc("incpathd_opcache_resets_called_off_total",
		"Resets called off because requests did not finish within half of --opcache-max-pause.", nil, nil)
	descResetPause = prometheus.NewDesc("incpathd_opcache_reset_pause_seconds_total",
		"Time new requests were held for resets.", nil, nil)
	descLastResetPause = prometheus.NewDesc("incpathd_opcache_last_reset_pause_seconds",
		"How long new requests were held for the last reset.", nil, nil)
	descHeld = prometheus.NewDesc("incpathd_requests_held",
		"Requests waiting at incpathd now for an opcache reset to end.", nil, nil)
	descHeldTotal = prometheus.NewDesc("incpathd_requests_held_total",
		"Requests that waited at incpathd for an opcache reset.", nil, nil)
)

// opcacheCollector collects the metrics above.
type opcacheCollector struct{ o Opcache }

func (c *opcacheCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descOpcacheUp, descOpcacheMemory, descOpcacheSlotsUsed, descOpcacheSlots, descOpcacheFull,
		descOpcacheHits, descOpcacheMisses, descOpcacheRestarts, descOpcacheScripts, descOpcacheBytes, descOpcacheFiles,
		descWarms, descWarmFailures, descWarmSeconds, descLastWarm, descEvictions, descEvictSeconds,
		descResets, descResetsOff, descResetPause, descLastResetPause, descHeld, descHeldTotal,
	} {
		ch <- d
	}
}

func (c *opcacheCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s := c.o.Snapshot(ctx)
	put := func(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, t, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) { put(d, prometheus.GaugeValue, v, labels...) }
	counter := func(d *prometheus.Desc, v float64, labels ...string) { put(d, prometheus.CounterValue, v, labels...) }
	st := s.Stats
	counter(descWarms, float64(st.Warms))
	counter(descWarmFailures, float64(st.WarmFailures))
	counter(descWarmSeconds, st.WarmSeconds)
	if st.LastWarm != nil {
		gauge(descLastWarm, st.LastWarm.Seconds)
	}
	counter(descEvictions, float64(st.Evictions))
	counter(descEvictSeconds, st.EvictSeconds)
	counter(descResets, float64(st.Resets))
	counter(descResetsOff, float64(st.ResetsCalledOff))
	counter(descResetPause, st.ResetPauseSeconds)
	if st.LastReset != nil {
		gauge(descLastResetPause, st.LastReset.PauseSeconds)
	}
	if g := s.Gate; g != nil {
		gauge(descHeld, float64(g.Held))
		counter(descHeldTotal, float64(g.HeldTotal))
	}
	o := s.Status
	if o == nil {
		gauge(descOpcacheUp, 0)
		return
	}
	gauge(descOpcacheUp, 1)
	gauge(descOpcacheMemory, float64(o.UsedMemory), "used")
	gauge(descOpcacheMemory, float64(o.FreeMemory), "free")
	gauge(descOpcacheMemory, float64(o.WastedMemory), "wasted")
	gauge(descOpcacheSlotsUsed, float64(o.Keys))
	gauge(descOpcacheSlots, float64(o.MaxKeys))
	full := 0.0
	if o.CacheFull {
		full = 1
	}
	gauge(descOpcacheFull, full)
	counter(descOpcacheHits, float64(o.Hits))
	counter(descOpcacheMisses, float64(o.Misses))
	counter(descOpcacheRestarts, float64(o.ManualRestarts), "manual")
	counter(descOpcacheRestarts, float64(o.HashRestarts), "hash")
	counter(descOpcacheRestarts, float64(o.OOMRestarts), "oom")
	for _, r := range s.Releases {
		gauge(descOpcacheScripts, float64(r.Scripts), r.Path, r.State)
		gauge(descOpcacheBytes, float64(r.Bytes), r.Path, r.State)
		if r.Files > 0 {
			gauge(descOpcacheFiles, float64(r.Files), r.Path, r.State)
		}
	}
}

// maxReleaseLabels bounds the release label values of
// incpathd_release_errors_total; later releases count as "other".
const maxReleaseLabels = 64

// releaseErrors counts 5xx answers per release. Only 5xx answers pay for
// the label lookup: the others cost nothing more.
type releaseErrors struct {
	vec  *prometheus.CounterVec
	mu   sync.Mutex
	seen map[string]bool
}

func newReleaseErrors() *releaseErrors {
	return &releaseErrors{
		vec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "incpathd_release_errors_total",
			Help: "Requests answered 5xx, by the release they were pinned to (\"\" not pinned; \"other\" past 64 releases).",
		}, []string{"release"}),
		seen: map[string]bool{},
	}
}

func (e *releaseErrors) add(release string) {
	e.mu.Lock()
	if !e.seen[release] {
		if len(e.seen) >= maxReleaseLabels {
			release = otherFrontEnd
		} else {
			e.seen[release] = true
		}
	}
	e.mu.Unlock()
	e.vec.WithLabelValues(release).Inc()
}
