package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/internal/testenv"
)

// The flip torture: real nginx → incpathd → real php-fpm (opcache on, PHP's
// realpath cache at its defaults), 16 clients requesting torture.php while
// current is flipped atomically to the next of four releases every 50 ms.
// torture.php names the release of the script, of an include found through
// include_path before a 20 ms pause, of another after it, and of
// release.txt read through DOCUMENT_ROOT.
//
// A response is mixed when those four disagree. Its staleness is how long
// before the request started the release it served had stopped being the
// target of current (zero if it was the target at any moment while the
// request ran): a request pinned to a release is served by it to the end,
// so only a pin made long after the release was replaced is stale.
//
// The same harness with nginx sending $realpath_root straight to php-fpm,
// include_path through current in PHP_VALUE (the usual recipe), must see
// mixed responses: that shows the harness can see the failure at all.
//
// Run `go test -run Torture -v ./cmd/incpathd` for the figures, one line
// per setup starting with "torture".
const (
	tortureClients  = 16 // concurrent requests, php-fpm children, --max-conns
	tortureFlipStep = 50 * time.Millisecond
	// watchAllowance is the staleness allowed with watching on: the time the
	// watcher takes to read the flip's event (well under a millisecond on
	// an idle machine), with room for a loaded, shared one. Without the
	// watch, a 60 s --realpath-every would leave three quarters of the
	// responses up to 150 ms stale.
	watchAllowance = 10 * time.Millisecond
)

var tortureReleases = []string{"A", "B", "C", "D"}

func tortureDuration() time.Duration {
	if testing.Short() {
		return 3 * time.Second
	}
	return 10 * time.Second
}

// tortureReport is what one run saw.
type tortureReport struct {
	setup     string
	requests  int
	mixed     int
	non200    int
	stale     int // staleness over allowance
	allowance time.Duration
	worst     time.Duration // the largest staleness seen
	flips     int
	examples  []string // a few bad responses, for the log
}

func (r tortureReport) String() string {
	return fmt.Sprintf("torture %-20s requests=%d mixed=%d non200=%d stale=%d (staleness>%v) worst_staleness=%v flips=%d",
		r.setup, r.requests, r.mixed, r.non200, r.stale, r.allowance, r.worst.Round(100*time.Microsecond), r.flips)
}

func TestTorture(t *testing.T) {
	var reports []tortureReport
	defer func() {
		for _, r := range reports {
			t.Log(r)
		}
	}()

	// Watching off: a flip is seen once --realpath-every has passed, and
	// no later.
	t.Run("incpathd-poll", func(t *testing.T) {
		const every = 100 * time.Millisecond
		site, nginx := tortureIncpathd(t, "--watch=false", "--realpath-every", every.String())
		r := torture(t, "incpathd-poll-100ms", site, nginx, every)
		reports = append(reports, r)
		assert.Zero(t, r.mixed, "responses mixing releases: %v", r.examples)
		assert.Zero(t, r.non200, "failed responses: %v", r.examples)
		assert.Zero(t, r.stale, "responses pinned to a release replaced more than --realpath-every before they started: %v", r.examples)
	})

	// Watching on (the default) with a minute-long --realpath-every: the
	// watch alone makes flips visible.
	t.Run("incpathd-watch", func(t *testing.T) {
		site, nginx := tortureIncpathd(t, "--realpath-every", "60s")
		r := torture(t, "incpathd-watch-60s", site, nginx, watchAllowance)
		reports = append(reports, r)
		assert.Zero(t, r.mixed, "responses mixing releases: %v", r.examples)
		assert.Zero(t, r.non200, "failed responses: %v", r.examples)
		// Timing on a shared machine: allow a few, not a trend.
		assert.LessOrEqual(t, r.stale, max(5, r.requests/100), "stale responses: %v", r.examples)
	})

	// No incpathd: the failure the harness must be able to see.
	t.Run("nginx-realpath_root", func(t *testing.T) {
		site := testenv.NewSite(t, tortureReleases...)
		fpm := testenv.StartFPM(t, testenv.FPMOptions{Children: tortureClients, Opcache: true})
		nginx := testenv.StartNginx(t, testenv.NginxOptions{
			Root:         site.Current,
			FastCGIPass:  fpm.Addr,
			RealpathRoot: true,
			KeepConn:     true,
			Keepalive:    tortureClients,
			Extra:        `fastcgi_param PHP_VALUE "include_path=.:` + site.IncludeDir() + `";`,
		})
		r := torture(t, "nginx-realpath_root", site, nginx, watchAllowance)
		reports = append(reports, r)
		assert.Positive(t, r.mixed, "the harness saw no mixed response without incpathd")
		assert.Zero(t, r.non200, "failed responses: %v", r.examples)
	})
}

// tortureIncpathd starts php-fpm, incpathd with args and nginx in front of
// a four-release site.
func tortureIncpathd(t *testing.T, args ...string) (*testenv.Site, *testenv.Nginx) {
	t.Helper()
	site := testenv.NewSite(t, tortureReleases...)
	fpm := testenv.StartFPM(t, testenv.FPMOptions{Children: tortureClients, Opcache: true})
	addr, _, _ := startIncpathd(t, append([]string{
		"--listen", testenv.FreeAddr(t),
		"--upstream", fpm.Addr,
		"--search-replace-pattern", site.Current,
		"--include-path", ".:" + site.IncludeDir(),
		// php-fpm holds a worker per open connection: a pool larger
		// than its children stalls.
		"--max-conns", fmt.Sprint(tortureClients),
	}, args...)...)
	nginx := testenv.StartNginx(t, testenv.NginxOptions{
		Root:        site.Current,
		FastCGIPass: addr,
		KeepConn:    true,
		Keepalive:   tortureClients,
	})
	return site, nginx
}

// active is a span of time during which release was current's target, from
// just before the rename that made it so to just after the one that ended it.
type active struct {
	release  string
	from, to time.Time // to is zero while it lasts
}

type sample struct {
	start, end time.Time
	code       int
	body       string
}

// torture runs the clients and the flipper for tortureDuration and judges
// every response; allowance is the staleness that still counts as fresh.
func torture(t *testing.T, setup string, site *testenv.Site, nginx *testenv.Nginx, allowance time.Duration) tortureReport {
	t.Helper()
	client := &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxConnsPerHost:     tortureClients,
			MaxIdleConnsPerHost: tortureClients,
			DisableCompression:  true,
		},
	}
	defer client.CloseIdleConnections()
	url := nginx.URL + "/torture.php"

	// Warm up: every worker has compiled the scripts of A.
	for range 2 * tortureClients {
		resp, err := client.Get(url)
		require.NoError(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}

	ctx, cancel := context.WithTimeout(context.Background(), tortureDuration())
	defer cancel()
	spans := []active{{release: tortureReleases[0]}}
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(tortureFlipStep)
		defer tick.Stop()
		for i := 1; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			next := tortureReleases[i%len(tortureReleases)]
			before := time.Now()
			if err := site.Flip(next); err != nil {
				t.Error(err)
				return
			}
			spans[len(spans)-1].to = time.Now()
			spans = append(spans, active{release: next, from: before})
		}
	})
	results := make([][]sample, tortureClients)
	for c := range tortureClients {
		wg.Go(func() {
			for ctx.Err() == nil {
				s := sample{start: time.Now()}
				resp, err := client.Get(url)
				if err != nil {
					s.body = err.Error()
				} else {
					b, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					s.code, s.body = resp.StatusCode, string(b)
					if err != nil {
						s.code, s.body = 0, err.Error()
					}
				}
				s.end = time.Now()
				results[c] = append(results[c], s)
			}
		})
	}
	wg.Wait()

	r := tortureReport{setup: setup, allowance: allowance, flips: len(spans) - 1}
	bad := func(format string, args ...any) {
		if len(r.examples) < 5 {
			r.examples = append(r.examples, fmt.Sprintf(format, args...))
		}
	}
	for _, rs := range results {
		for _, s := range rs {
			r.requests++
			if s.code != 200 {
				r.non200++
				bad("status %d: %q", s.code, s.body)
				continue
			}
			f := strings.Fields(s.body)
			if len(f) != 4 || f[0] != f[1] || f[0] != f[2] || f[0] != f[3] {
				r.mixed++
				bad("mixed: %q", s.body)
				continue
			}
			st := staleness(spans, f[0], s.start, s.end)
			r.worst = max(r.worst, st)
			if st > allowance {
				r.stale++
				bad("release %s served %v after it was replaced", f[0], st)
			}
		}
	}
	require.Positive(t, r.requests)
	require.Positive(t, r.flips)
	t.Log(r)
	return r
}

// staleness returns how long before start release had stopped being
// current's target, or zero if it was the target at some moment between
// start and end. A release never current before start is infinitely stale.
func staleness(spans []active, release string, start, end time.Time) time.Duration {
	var last time.Time
	for _, s := range spans {
		if s.release != release || s.from.After(end) {
			continue
		}
		if s.to.IsZero() || !s.to.Before(start) {
			return 0
		}
		if s.to.After(last) {
			last = s.to
		}
	}
	if last.IsZero() {
		return time.Duration(1<<63 - 1)
	}
	return start.Sub(last)
}

func TestStaleness(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	spans := []active{
		{release: "A", to: at(50)},
		{release: "B", from: at(49), to: at(100)},
		{release: "A", from: at(99), to: at(150)},
		{release: "B", from: at(149)},
	}
	for _, tc := range []struct {
		release    string
		start, end int
		want       time.Duration
	}{
		{"A", 10, 30, 0},                     // current throughout
		{"A", 60, 80, 10 * time.Millisecond}, // replaced at 50, started at 60
		{"A", 60, 120, 0},                    // A again while it ran
		{"B", 120, 140, 20 * time.Millisecond},
		{"B", 120, 160, 0}, // B again before it ended
		{"A", 200, 220, 50 * time.Millisecond},
		{"B", 500, 520, 0}, // current to the end
		{"C", 10, 20, time.Duration(1<<63 - 1)},
	} {
		assert.Equal(t, tc.want, staleness(spans, tc.release, at(tc.start), at(tc.end)), "%+v", tc)
	}
}
