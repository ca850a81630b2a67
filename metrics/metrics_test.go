package metrics

import (
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/pin"
	"github.com/incpathd/incpathd/proxy"
)

type fakeMaintenance struct {
	on       atomic.Bool
	answered atomic.Uint64
}

func (f *fakeMaintenance) On() bool         { return f.on.Load() }
func (f *fakeMaintenance) Answered() uint64 { return f.answered.Load() }

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	require.Equal(t, 200, rec.Code)
	b, err := io.ReadAll(rec.Body)
	require.NoError(t, err)
	return string(b)
}

func TestExport(t *testing.T) {
	maint := &fakeMaintenance{}
	maint.on.Store(true)
	maint.answered.Store(7)
	m := New(Sources{
		Proxy:       &proxy.Proxy{},
		Pool:        &fcgi.Pool{},
		Resolver:    &pin.Resolver{},
		Maintenance: maint,
		ReleasesInFlight: func() map[string]int64 {
			return map[string]int64{"/srv/releases/A": 2, "/srv/releases/B": 0}
		},
		SymlinkTargets: func() map[string]string { return map[string]string{"/srv/current": "releases/B"} },
		Version:        "1.2.3",
		FrontEnds:      []string{"*", "NGINX-internal", "nginx"},
	})
	m.RequestDone(proxy.Done{FrontEnd: "nginx", Status: 200, Duration: 3 * time.Millisecond})
	m.RequestDone(proxy.Done{FrontEnd: "nginx", Status: 404, Duration: time.Millisecond})
	m.RequestDone(proxy.Done{FrontEnd: "nginx-internal", Status: 302})
	m.RequestDone(proxy.Done{FrontEnd: "made-up", Status: 200})
	m.RequestDone(proxy.Done{FrontEnd: "", Status: 200})
	m.RequestDone(proxy.Done{FrontEnd: "apache", Status: 503, Err: fmt.Errorf("resolve: %w", pin.ErrUnresolvable)})
	m.RequestDone(proxy.Done{FrontEnd: "apache", Status: 403, Err: fmt.Errorf("resolve: %w", pin.ErrOutsideRoot)})
	m.RequestDone(proxy.Done{FrontEnd: "caddy", Status: 499})

	out := scrape(t, m)
	for _, want := range []string{
		`incpathd_requests_total{code="2xx",frontend="nginx"} 1`,
		`incpathd_requests_total{code="4xx",frontend="nginx"} 1`,
		`incpathd_requests_total{code="3xx",frontend="nginx-internal"} 1`,
		`incpathd_requests_total{code="2xx",frontend="other"} 2`,
		`incpathd_requests_total{code="5xx",frontend="apache"} 1`,
		`incpathd_requests_total{code="4xx",frontend="caddy"} 1`,
		`incpathd_request_duration_seconds_count 8`,
		`incpathd_request_duration_seconds_bucket{le="0.005"} 8`,
		`incpathd_request_duration_seconds_bucket{le="0.0025"} 7`,
		`incpathd_resolution_failures_total{reason="unresolvable"} 1`,
		`incpathd_resolution_failures_total{reason="outside_root"} 1`,
		`incpathd_requests_in_flight 0`,
		`incpathd_upstream_connections{pool="default",state="idle"} 0`,
		`incpathd_upstream_connections{pool="default",state="busy"} 0`,
		`incpathd_upstream_dial_errors_total{pool="default"} 0`,
		`incpathd_upstream_down{pool="default"} 0`,
		`incpathd_upstream_retries_total 0`,
		`incpathd_resolver_cache_hits_total 0`,
		`incpathd_resolver_cache_misses_total 0`,
		`incpathd_resolutions_total 0`,
		`incpathd_maintenance_mode 1`,
		`incpathd_maintenance_responses_total 7`,
		`incpathd_release_requests_in_flight{release="/srv/releases/A"} 2`,
		`incpathd_release_requests_in_flight{release="/srv/releases/B"} 0`,
		`incpathd_symlink_target_info{link="/srv/current",target="releases/B"} 1`,
		`incpathd_build_info{goversion="go`,
		`version="1.2.3"} 1`,
		`go_goroutines `,
		`process_open_fds `,
	} {
		assert.Contains(t, out, want)
	}
	assert.NotContains(t, out, `frontend="made-up"`)
	assert.NotContains(t, out, `frontend="*"`)
}

// Nil sources leave their metrics out instead of failing the scrape.
func TestExportWithoutSources(t *testing.T) {
	out := scrape(t, New(Sources{}))
	assert.Contains(t, out, "incpathd_build_info")
	assert.NotContains(t, out, "incpathd_upstream_connections")
	assert.NotContains(t, out, "incpathd_release_requests_in_flight")
	assert.NotContains(t, out, "incpathd_maintenance_mode")
}

func TestFrontEndLabelsAreBounded(t *testing.T) {
	var many []string
	for i := range 100 {
		many = append(many, fmt.Sprintf("fe%d", i))
	}
	labels := frontEndLabels(many)
	assert.Len(t, labels, maxFrontEnds+1)
	assert.Equal(t, "other", labels[len(labels)-1])
}

func TestClass(t *testing.T) {
	for status, want := range map[int]string{0: "1xx", 100: "1xx", 200: "2xx", 302: "3xx", 499: "4xx", 503: "5xx", 999: "5xx"} {
		assert.Equal(t, want, classes[class(status)], "%d", status)
	}
}

func TestRequestDoneAllocatesNothing(t *testing.T) {
	m := New(Sources{})
	d := proxy.Done{FrontEnd: "nginx", Status: 200, Duration: time.Millisecond}
	assert.Zero(t, testing.AllocsPerRun(1000, func() { m.RequestDone(d) }))
	d.FrontEnd = "something-else"
	assert.Zero(t, testing.AllocsPerRun(1000, func() { m.RequestDone(d) }))
}

// The observer's cost per request, what --metrics adds to the hot path.
func BenchmarkRequestDone(b *testing.B) {
	m := New(Sources{FrontEnds: []string{"internal"}})
	for _, fe := range []string{"nginx", "internal", "unknown"} {
		b.Run(fe, func(b *testing.B) {
			d := proxy.Done{FrontEnd: fe, Status: 200, Duration: 3 * time.Millisecond}
			b.ReportAllocs()
			for b.Loop() {
				m.RequestDone(d)
			}
		})
	}
}

func BenchmarkRequestDoneParallel(b *testing.B) {
	m := New(Sources{})
	d := proxy.Done{FrontEnd: "nginx", Status: 200, Duration: 3 * time.Millisecond}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.RequestDone(d)
		}
	})
}

func BenchmarkScrape(b *testing.B) {
	m := New(Sources{Proxy: &proxy.Proxy{}, Pool: &fcgi.Pool{}, Resolver: &pin.Resolver{}})
	for b.Loop() {
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		if !strings.Contains(rec.Body.String(), "incpathd_requests_total") {
			b.Fatal("no metrics")
		}
	}
}
