package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/internal/testenv"
	"github.com/incpathd/incpathd/internal/testsupport"
	"github.com/incpathd/incpathd/proxy"
)

// faultStack is a stack whose incpathd's pool and proxy the test can read.
type faultStack struct {
	*stack
	pool  *fcgi.Pool
	proxy *proxy.Proxy

	baseGoroutines, baseFDs int
}

// startFaultStack starts a stack and records the goroutines and open files
// of this process once it runs, before any request: nginx connects to
// incpathd only when the first request comes.
func startFaultStack(t *testing.T, o stackOptions) *faultStack {
	t.Helper()
	fs := &faultStack{}
	testHookServing = func(d *daemon) { fs.pool, fs.proxy = d.pool, d.proxy }
	defer func() { testHookServing = nil }()
	fs.stack = startStack(t, o)
	require.NotNil(t, fs.pool)
	fs.baseGoroutines = runtime.NumGoroutine()
	fs.baseFDs = openFDs(t)
	return fs
}

// checkNoLeaks stops nginx, which closes its connections to incpathd, and
// checks that the goroutines of this process come back to the baseline and
// that the open files are the baseline's plus the idle upstream
// connections the pool keeps.
func (fs *faultStack) checkNoLeaks(t *testing.T) {
	t.Helper()
	fs.nginx.Client().CloseIdleConnections()
	fs.nginx.Stop()
	ok := testsupport.Eventually(10*time.Second, func() bool { return runtime.NumGoroutine() <= fs.baseGoroutines })
	if !ok {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines: got %d; want at most %d\n%s", runtime.NumGoroutine(), fs.baseGoroutines, buf[:runtime.Stack(buf, true)])
	}
	st := fs.pool.Stats()
	assert.Equal(t, st.Open, st.Idle, "upstream connections still busy: %+v", st)
	assert.LessOrEqual(t, st.Open, fs.pool.MaxConns)
	ok = testsupport.Eventually(10*time.Second, func() bool { return openFDs(t) <= fs.baseFDs+fs.pool.Stats().Open })
	assert.True(t, ok, "open files: got %d; want at most %d + %d idle upstream", openFDs(t), fs.baseFDs, fs.pool.Stats().Open)
}

// openFDs counts this process's open file descriptors.
func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

// loadSample is one request of a load run.
type loadSample struct {
	start, end time.Time
	code       int // 0: transport error
	err        error
}

// runLoad runs GETs of path(i) from clients goroutines until total requests
// have been sent or ctx ends, and returns every request's sample.
func runLoad(ctx context.Context, client *http.Client, base string, clients, total int, path func(i int) string) []loadSample {
	var (
		mu   sync.Mutex
		out  []loadSample
		next int
		wg   sync.WaitGroup
	)
	for range clients {
		wg.Go(func() {
			for ctx.Err() == nil {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if total > 0 && i >= total {
					return
				}
				s := loadSample{start: time.Now()}
				resp, err := client.Get(base + path(i))
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					s.code = resp.StatusCode
				}
				s.err = err
				s.end = time.Now()
				mu.Lock()
				out = append(out, s)
				mu.Unlock()
				if s.code != 200 {
					// Errors come fast: keep the load bounded while they do.
					time.Sleep(5 * time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	return out
}

// codes counts samples by status code (0 for transport errors).
func codes(samples []loadSample) map[int]int {
	m := map[int]int{}
	for _, s := range samples {
		m[s.code]++
	}
	return m
}

func maxLatency(samples []loadSample) time.Duration {
	var d time.Duration
	for _, s := range samples {
		d = max(d, s.end.Sub(s.start))
	}
	return d
}

// envInt reads a positive count from the environment, or def.
func envInt(t testing.TB, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	require.NoError(t, err, "%s", name)
	require.Positive(t, n, "%s", name)
	return n
}

// php-fpm killed with SIGKILL under load, then started again: requests in
// flight at the kill are replayed (they are GETs) and wait in the hold
// with those that come while it is down, nothing hangs, and once it is
// back every request succeeds with no restart of anything else.
func TestFaultFPMKilledMidLoad(t *testing.T) {
	s := startFaultStack(t, stackOptions{
		fpm:   testenv.FPMOptions{Children: 4},
		nginx: testenv.NginxOptions{KeepConn: true},
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	paths := func(i int) string {
		if i%2 == 0 {
			return "/slow.php?ms=300"
		}
		return "/index.php"
	}
	done := make(chan []loadSample, 1)
	go func() { done <- runLoad(ctx, s.nginx.Client(), s.nginx.URL, 4, 0, paths) }()

	time.Sleep(700 * time.Millisecond)
	killed := time.Now()
	s.fpm.Kill()
	time.Sleep(700 * time.Millisecond)
	s.fpm.Start(t)
	restarted := time.Now() // and serving
	time.Sleep(700 * time.Millisecond)
	cancel()
	samples := <-done

	var before, inFlight, down, after []loadSample
	for _, x := range samples {
		switch {
		case x.end.Before(killed):
			before = append(before, x)
		case x.start.Before(killed):
			inFlight = append(inFlight, x)
		case x.start.Before(restarted):
			down = append(down, x)
		default:
			after = append(after, x)
		}
	}
	t.Logf("before the kill: %v; in flight at the kill: %v; while down: %v; after the restart: %v; slowest: %v",
		codes(before), codes(inFlight), codes(down), codes(after), maxLatency(samples))
	t.Logf("proxy: %d requests, %d failed, %d retries; pool: %+v; hold: %+v",
		s.proxy.Stats().Requests.Load(), s.proxy.Stats().Failed.Load(), s.proxy.Stats().Retries.Load(), s.pool.Stats(), s.pool.HoldStats())

	require.NotEmpty(t, before)
	assert.Equal(t, len(before), codes(before)[200], "before the kill")
	for _, x := range append(inFlight, down...) {
		assert.Equal(t, 200, x.code, "in flight at the kill or sent while down: %v", x.err)
		assert.Less(t, x.end.Sub(killed), 5*time.Second, "a request hung")
	}
	assert.NotZero(t, s.pool.HoldStats().Held, "no request saw php-fpm down")
	assert.NotEmpty(t, after)
	assert.Equal(t, len(after), codes(after)[200], "after the restart")
	assert.Less(t, maxLatency(samples), 10*time.Second, "a request hung")

	// Back up: every request succeeds, on fresh connections.
	for i := range 20 {
		code, body := s.nginx.Get(t, paths(i))
		require.Equal(t, 200, code, "request %d after the restart: %s", i, body)
	}
	s.checkNoLeaks(t)
}

// php-fpm recycling its workers every 3 requests closes a kept connection
// right after END_REQUEST, so reused connections are often dead: the
// liveness check and the one retry on a fresh connection must lose no
// request. INCPATHD_RECYCLE_REQUESTS sets the count (default 2,000).
func TestFaultMaxRequestsRecycling(t *testing.T) {
	total := envInt(t, "INCPATHD_RECYCLE_REQUESTS", 2000)
	s := startFaultStack(t, stackOptions{
		fpm:   testenv.FPMOptions{Children: 4, MaxRequests: 3},
		nginx: testenv.NginxOptions{KeepConn: true},
	})
	start := time.Now()
	samples := runLoad(context.Background(), s.nginx.Client(), s.nginx.URL, 4, total, func(i int) string {
		if i%5 == 0 {
			return "/big.php?bytes=200000"
		}
		return "/index.php"
	})
	took := time.Since(start)
	st, ps := s.proxy.Stats(), s.pool.Stats()
	t.Logf("%d requests in %v: %v; proxy: %d failed, %d retries; pool: %d dials, %d reused, %d stale",
		len(samples), took.Round(time.Millisecond), codes(samples), st.Failed.Load(), st.Retries.Load(), ps.Dials, ps.Reused, ps.Stale)
	assert.Len(t, samples, total)
	assert.Equal(t, total, codes(samples)[200], "failed requests: %v", codes(samples))
	assert.Zero(t, st.Failed.Load())
	// The test means something only if connections did die under us.
	assert.NotZero(t, ps.Stale+st.Retries.Load(), "no recycled connection was met")
	s.checkNoLeaks(t)
}

// php-fpm saturated: 2 workers, each request holding one for 4 seconds.
// incpathd keeps at most --max-conns upstream connections, queues the
// rest for --queue-timeout, then answers 503; memory stays bounded however
// many requests pile up.
func TestFaultSaturated(t *testing.T) {
	s := startFaultStack(t, stackOptions{
		args:  []string{"--max-conns", "2", "--queue-timeout", "300ms"},
		fpm:   testenv.FPMOptions{Children: 2},
		nginx: testenv.NginxOptions{KeepConn: true, Keepalive: 64},
	})
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	// Sample the pool while the load runs.
	var maxOpen int
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				maxOpen = max(maxOpen, s.pool.Stats().Open)
			}
		}
	}()
	const clients, total = 32, 96
	samples := runLoad(context.Background(), s.nginx.Client(), s.nginx.URL, clients, total, func(int) string {
		return "/slow.php?ms=4000"
	})
	close(stop)
	<-sampled

	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	c := codes(samples)
	var busy []time.Duration
	for _, x := range samples {
		if x.code == 503 {
			busy = append(busy, x.end.Sub(x.start))
		}
	}
	sort.Slice(busy, func(i, j int) bool { return busy[i] < busy[j] })
	t.Logf("%d requests from %d clients: %v; most upstream connections open: %d; pool: %+v; heap in use %d KiB before, %d KiB after",
		len(samples), clients, c, maxOpen, s.pool.Stats(), before.HeapInuse>>10, after.HeapInuse>>10)
	if len(busy) > 0 {
		t.Logf("503 answered after %v (fastest) to %v (slowest)", busy[0], busy[len(busy)-1])
	}

	assert.Equal(t, total, c[200]+c[503], "only successes and 503s: %v", c)
	assert.NotZero(t, c[200])
	assert.NotZero(t, c[503], "the queue never timed out")
	assert.LessOrEqual(t, maxOpen, 2, "more upstream connections than --max-conns")
	assert.Equal(t, uint64(c[503]), s.pool.Stats().Timeouts)
	for _, d := range busy {
		// The queue timeout is 300ms; nothing waits for the 4 s script.
		// Generous: a loaded machine under the race detector has answered
		// 1.5 s late.
		assert.Less(t, d, 3*time.Second, "a 503 took the time of a slow request")
	}
	assert.Less(t, int64(after.HeapInuse)-int64(before.HeapInuse), int64(32<<20), "heap grew")
	s.checkNoLeaks(t)
}

// The client goes away mid-request: nginx (fastcgi_ignore_client_abort
// off, the default) closes its connection to incpathd, which must close
// the upstream connection rather than reuse it, and leak nothing.
func TestFaultClientAborts(t *testing.T) {
	s := startFaultStack(t, stackOptions{
		fpm: testenv.FPMOptions{Children: 4},
		// No temporary file: nginx reads the response only as fast as the
		// client takes it, so the big download is surely cut mid-way.
		nginx: testenv.NginxOptions{KeepConn: true, Extra: "fastcgi_max_temp_file_size 0;"},
	})
	abort := func(path string, after func(*http.Response)) {
		ctx, cancel := context.WithCancel(context.Background())
		req, err := http.NewRequestWithContext(ctx, "GET", s.nginx.URL+path, nil)
		require.NoError(t, err)
		tr := &http.Transport{DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		respc := make(chan *http.Response, 1)
		go func() {
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if err != nil {
				respc <- nil
				return
			}
			respc <- resp
		}()
		if after == nil {
			time.Sleep(300 * time.Millisecond)
			cancel()
			if resp := <-respc; resp != nil {
				resp.Body.Close()
			}
			return
		}
		resp := <-respc
		require.NotNil(t, resp)
		after(resp)
		cancel()
		resp.Body.Close()
	}

	for i := range 3 {
		abort(fmt.Sprintf("/slow.php?ms=%d", 2000+i), nil)
		abort("/big.php?mb=256", func(resp *http.Response) {
			n, err := io.CopyN(io.Discard, resp.Body, 1<<20)
			require.NoError(t, err)
			require.Equal(t, int64(1<<20), n)
		})
	}
	// The aborted requests' upstream connections are closed, not kept:
	// every abort is logged, and the pool does not hold them.
	ok := testsupport.Eventually(10*time.Second, func() bool {
		return strings.Count(s.log.String(), "request aborted by the web server") >= 6
	})
	assert.True(t, ok, "aborts logged: %d; want 6", strings.Count(s.log.String(), "request aborted by the web server"))
	st := s.pool.Stats()
	t.Logf("pool after 6 aborts: %+v; proxy: %d failed", st, s.proxy.Stats().Failed.Load())
	assert.Equal(t, st.Open, st.Idle, "an aborted request's upstream connection is still busy")
	assert.Zero(t, st.Reused, "an aborted request's upstream connection was reused")

	// The stack still serves.
	for range 4 {
		assertPinned(t, s.site, s.index(t, "/index.php"), "A")
	}
	s.checkNoLeaks(t)
}

// A web server that sends ABORT_REQUEST mid-request: incpathd closes the
// upstream connection, which ends the application's request (its context
// is canceled), answers nothing more, and leaks nothing.
func TestFaultAbortRequestRecord(t *testing.T) {
	up := startFakeUpstream(t)
	var pool *fcgi.Pool
	testHookServing = func(d *daemon) { pool = d.pool }
	addr, log, _ := startIncpathd(t, "--listen", testenv.FreeAddr(t), "--upstream", up.addr, "--log-level", "debug")
	testHookServing = nil
	site := newPathSite(t)
	base := runtime.NumGoroutine()

	for i := range 5 {
		c := dialFCGI(t, addr)
		require.NoError(t, c.send(true, baseParams(site.current, "sleep=10s&n="+strconv.Itoa(i)), nil))
		require.True(t, testsupport.Eventually(5*time.Second, func() bool { return len(up.requests()) == i+1 }), "request %d not forwarded", i)
		start := time.Now()
		_, err := c.nc.Write(recordBytes(fcgi.TypeAbortRequest, 1, nil))
		require.NoError(t, err)
		res := c.read(5 * time.Second)
		assert.True(t, res.closed && !res.ended, "after ABORT_REQUEST: %+v", res)
		assert.Less(t, time.Since(start), 3*time.Second)
		c.nc.Close()
	}
	assert.True(t, testsupport.Eventually(5*time.Second, func() bool { return up.aborted() == 5 }), "upstream requests ended: %d of 5", up.aborted())
	st := pool.Stats()
	assert.Zero(t, st.Open, "the aborted requests' upstream connections are kept: %+v", st)
	assert.Equal(t, 5, strings.Count(log.String(), "request aborted by the web server"))
	assert.True(t, testsupport.Eventually(5*time.Second, func() bool { return runtime.NumGoroutine() <= base }),
		"goroutines: got %d; want at most %d", runtime.NumGoroutine(), base)
}

// recordBytes encodes one record.
func recordBytes(typ uint8, id uint16, content []byte) []byte {
	b := []byte{fcgi.Version1, typ, byte(id >> 8), byte(id), byte(len(content) >> 8), byte(len(content)), 0, 0}
	return append(b, content...)
}
