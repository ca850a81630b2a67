package main

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/internal/testenv"
	"github.com/incpathd/incpathd/internal/testsupport"
	"github.com/incpathd/incpathd/proxy"
)

// TestSoak sends a long mix of requests through incpathd to an in-process
// upstream: small and large responses, request bodies, application errors
// before and after the first response byte, the web server hanging up
// mid-request or sending ABORT_REQUEST, refused paths, kept and one-shot
// connections. Every request must get its expected outcome, and at the end
// the goroutines and open files of the process must be back to their
// baseline, with no upstream connection or request left busy.
//
// INCPATHD_SOAK_REQUESTS sets the count: by default 20,000, or 5,000
// under the race detector (6 to 30 s on 2 busy cores), 1,000 with -short;
// the full soak is 100,000.
func TestSoak(t *testing.T) {
	def := 20000
	if raceEnabled {
		def = 5000
	}
	total := envInt(t, "INCPATHD_SOAK_REQUESTS", def)
	if testing.Short() {
		total = min(total, 1000)
	}
	site := newPathSite(t)
	up := startFakeUpstream(t)
	up.forgetParams() // 100,000 param maps are not worth keeping
	var (
		pool *fcgi.Pool
		prx  *proxy.Proxy
	)
	testHookServing = func(d *daemon) { pool, prx = d.pool, d.proxy }
	addr, log, _ := startIncpathd(t,
		"--listen", testenv.FreeAddr(t),
		"--upstream", up.addr,
		"--max-conns", "4",
		"--allow-root", site.releases,
		"--log-level", "error",
	)
	testHookServing = nil
	runtime.GC()
	baseGoroutines := runtime.NumGoroutine()
	baseFDs := openFDs(t)
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	type kind struct {
		name   string
		weight int
		query  string
		body   int
		params func([]fcgi.Pair) []fcgi.Pair
		// hangUp: the client closes mid-request; abort: it sends
		// ABORT_REQUEST.
		hangUp, abort bool
		// want: the status; 0 means the connection ends without
		// END_REQUEST.
		want int
		// want bytes of stdout after the header, if positive.
		size int
	}
	kinds := []kind{
		{name: "small", weight: 50, query: "bytes=200", want: 200, size: 200},
		{name: "large", weight: 8, query: "bytes=300000", want: 200, size: 300000},
		{name: "body", weight: 8, query: "echo", body: 150000, want: 200},
		{name: "stderr", weight: 5, query: "stderr&bytes=10", want: 200, size: 10},
		{name: "fail mid-response", weight: 5, query: "fail&bytes=1000", want: 0},
		{name: "hang up", weight: 6, query: "sleep=20ms&bytes=100", hangUp: true},
		{name: "abort", weight: 6, query: "sleep=20ms&bytes=100", abort: true},
		{name: "refused", weight: 6, want: 400, params: func(p []fcgi.Pair) []fcgi.Pair {
			return withParam(p, "SCRIPT_FILENAME", site.current+"/../x.php")
		}},
		{name: "outside", weight: 6, want: 403, params: func(p []fcgi.Pair) []fcgi.Pair {
			return withParam(p, "DOCUMENT_ROOT", site.escape)
		}},
	}
	var wheel []int
	for i, k := range kinds {
		for range k.weight {
			wheel = append(wheel, i)
		}
	}
	body := []byte(strings.Repeat("b", 150000))

	var (
		next    atomic.Int64
		counts  = make([]atomic.Int64, len(kinds))
		errsMu  sync.Mutex
		errs    []string
		wg      sync.WaitGroup
		clients = 8
	)
	fail := func(format string, args ...any) {
		errsMu.Lock()
		defer errsMu.Unlock()
		if len(errs) < 20 {
			errs = append(errs, fmt.Sprintf(format, args...))
		}
	}
	start := time.Now()
	for range clients {
		wg.Go(func() {
			var c *fcgiClient
			defer func() {
				if c != nil {
					c.nc.Close()
				}
			}()
			for {
				i := int(next.Add(1)) - 1
				if i >= total {
					return
				}
				k := kinds[wheel[(i*7919)%len(wheel)]]
				counts[wheel[(i*7919)%len(wheel)]].Add(1)
				keep := i%10 != 0 && !k.hangUp && !k.abort && k.want != 0
				if c == nil {
					var err error
					if c, err = dialFCGINoCleanup(t, addr); err != nil {
						fail("%s: dial: %v", k.name, err)
						continue
					}
				}
				params := baseParams(site.current, k.query)
				if k.params != nil {
					params = k.params(params)
				}
				var b []byte
				if k.body > 0 {
					b = body[:k.body]
				}
				if err := c.send(keep, params, b); err != nil {
					fail("%s: send: %v", k.name, err)
					c.nc.Close()
					c = nil
					continue
				}
				switch {
				case k.hangUp:
					time.Sleep(time.Millisecond)
					c.nc.Close()
					c = nil
					continue
				case k.abort:
					time.Sleep(time.Millisecond)
					c.nc.Write(recordBytes(fcgi.TypeAbortRequest, 1, nil))
				}
				res := c.read(30 * time.Second)
				switch {
				case k.abort:
					if res.err != nil || res.ended && res.status != 200 {
						fail("%s: %+v", k.name, res)
					}
				case res.err != nil:
					fail("%s: %v", k.name, res.err)
				case k.want == 0:
					if res.ended {
						fail("%s: ended with %d", k.name, res.status)
					}
				case !res.ended || res.status != k.want:
					fail("%s: got %d (ended %v); want %d: %.200q", k.name, res.status, res.ended, k.want, res.stdout)
				case k.size > 0 && !strings.HasSuffix(res.stdout, "\r\n\r\n"+strings.Repeat("x", k.size)):
					fail("%s: body of %d bytes", k.name, len(res.stdout))
				case k.body > 0 && !strings.Contains(res.stdout, fmt.Sprintf("body=%d\n", k.body)):
					fail("%s: %.200q", k.name, res.stdout)
				}
				if !keep || !res.ended {
					c.nc.Close()
					c = nil
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)

	byKind := make(map[string]int64, len(kinds))
	for i, k := range kinds {
		byKind[k.name] = counts[i].Load()
	}
	// The fake upstream lives in this process: each idle pooled connection
	// has its serving goroutine and a second file there.
	ok := testsupport.Eventually(20*time.Second, func() bool {
		st := pool.Stats()
		return prx.Stats().InFlight.Load() == 0 && st.Open == st.Idle && runtime.NumGoroutine() <= baseGoroutines+st.Idle
	})
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	st := prx.Stats()
	t.Logf("%d requests in %v (%.0f/s) over %d clients: %v", total, took.Round(time.Millisecond), float64(total)/took.Seconds(), clients, byKind)
	t.Logf("proxy: %d requests, %d pinned, %d failed, %d retries; pool: %+v; upstream saw %d, %d ended by the proxy",
		st.Requests.Load(), st.Pinned.Load(), st.Failed.Load(), st.Retries.Load(), pool.Stats(), up.count(), up.aborted())
	t.Logf("goroutines %d (baseline %d), open files %d (baseline %d), heap in use %d KiB (baseline %d KiB), %d log bytes",
		runtime.NumGoroutine(), baseGoroutines, openFDs(t), baseFDs, after.HeapInuse>>10, before.HeapInuse>>10, len(log.String()))

	require.Empty(t, errs, "unexpected outcomes")
	if !ok {
		buf := make([]byte, 1<<20)
		t.Fatalf("not back to rest: in flight %d, pool %+v, goroutines %d > %d + idle\n%s",
			st.InFlight.Load(), pool.Stats(), runtime.NumGoroutine(), baseGoroutines, buf[:runtime.Stack(buf, true)])
	}
	assert.LessOrEqual(t, openFDs(t), baseFDs+2*pool.Stats().Open, "open files")
	assert.LessOrEqual(t, pool.Stats().Open, 4)
	// The log is kept in memory (its buffer may be twice its length); the
	// rest must not grow with the count. Before the test closed its own
	// clients without piling up t.Cleanup calls, 100,000 requests grew the
	// heap by 23 MiB, which this catches.
	assert.Less(t, int64(after.HeapInuse)-int64(before.HeapInuse), int64(4<<20+2*len(log.String())), "heap grew")
}
