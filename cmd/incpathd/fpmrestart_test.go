package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/control"
	"github.com/incpathd/incpathd/internal/testenv"
	"github.com/incpathd/incpathd/upstream"
)

// restartLoad is the load of the php-fpm restart tests: 8 connections
// through nginx, each request a 2 ms script, as the measurements of
// php-fpm restarts in the README.
const restartClients = 8

// served is one request of a load run and which php-fpm answered it.
type served struct {
	loadSample
	body string
}

// loadUntil sends GETs of url from restartClients goroutines until ctx
// ends, keeping every request's body.
func loadUntil(ctx context.Context, client *http.Client, url string) []served {
	return loadMixed(ctx, client, url, 0)
}

// loadMixed is loadUntil with posts of the goroutines sending POSTs
// instead: requests incpathd never replays.
func loadMixed(ctx context.Context, client *http.Client, url string, posts int) []served {
	var (
		mu  sync.Mutex
		out []served
		wg  sync.WaitGroup
	)
	for i := range restartClients {
		wg.Go(func() {
			for ctx.Err() == nil {
				s := served{loadSample: loadSample{start: time.Now()}}
				var resp *http.Response
				var err error
				if i < posts {
					// Without a body: the proxy's race between a body's end
					// and an early answer is not what this test is about.
					resp, err = client.Post(url, "", nil)
				} else {
					resp, err = client.Get(url)
				}
				if err == nil {
					var b []byte
					b, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					s.code, s.body = resp.StatusCode, string(b)
				}
				s.err, s.end = err, time.Now()
				mu.Lock()
				out = append(out, s)
				mu.Unlock()
				if s.code != 200 {
					time.Sleep(5 * time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	return out
}

// failures returns the requests that did not get a 200.
func failures(ss []served) []served {
	var bad []served
	for _, s := range ss {
		if s.code != 200 {
			bad = append(bad, s)
		}
	}
	return bad
}

// latencies returns the longest request and the 99th percentile of those
// that started in [from, to).
func latencies(ss []served, from, to time.Time) (longest, p99 time.Duration, n int) {
	var ds []time.Duration
	for _, s := range ss {
		if !s.start.Before(from) && s.start.Before(to) {
			ds = append(ds, s.end.Sub(s.start))
		}
	}
	if len(ds) == 0 {
		return 0, 0, 0
	}
	slices.Sort(ds)
	return ds[len(ds)-1], ds[(len(ds)*99)/100], len(ds)
}

// php-fpm stopped and started again under load, as `systemctl restart
// php8.2-fpm` after a php.ini change does: with incpathd's default flags
// not one request fails. Requests in flight at the stop are replayed (on a
// reused connection, not POST, LOCK, PATCH) and wait in the hold with the
// ones that come while php-fpm is down; all go on once it listens again.
// Over TCP (ECONNREFUSED while down) and a unix socket (ENOENT: php-fpm
// removes it), 0.5 s and 3 s down.
func TestFPMRestartUnderLoad(t *testing.T) {
	for _, tc := range []struct {
		name string
		down time.Duration
		unix bool
	}{
		{"tcp-0.5s", 500 * time.Millisecond, false},
		{"unix-3s", 3 * time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := stackOptions{
				// The bench's default: four workers, incpathd's --max-conns.
				fpm:   testenv.FPMOptions{Children: 4},
				nginx: testenv.NginxOptions{KeepConn: true},
			}
			if tc.unix {
				o.fpm.Listen = "unix:" + filepath.Join(t.TempDir(), "fpm.sock")
			}
			s := startFaultStack(t, o)
			url := s.nginx.URL + "/slow.php?ms=2"
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan []served, 1)
			go func() { done <- loadUntil(ctx, s.nginx.Client(), url) }()

			time.Sleep(time.Second)
			stopped := time.Now()
			s.fpm.Stop()
			time.Sleep(tc.down)
			s.fpm.Start(t)
			started := time.Now()
			time.Sleep(time.Second)
			cancel()
			ss := <-done

			longest, p99, n := latencies(ss, stopped.Add(-100*time.Millisecond), started.Add(100*time.Millisecond))
			hold := s.pool.HoldStats()
			t.Logf("php-fpm down %v (stop to ready %v): %d requests, %d failed; %d started around the restart: longest %v, p99 %v; held %d, held time %v; retries %d",
				tc.down, started.Sub(stopped), len(ss), len(failures(ss)), n, longest, p99, hold.Held, hold.HeldTime, s.proxy.Stats().Retries.Load())
			for _, f := range failures(ss) {
				t.Errorf("failed: %d %v %q at %v", f.code, f.err, f.body, f.start.Sub(stopped))
			}
			if len(failures(ss)) > 0 {
				for _, l := range strings.Split(s.log.String(), "\n") {
					if strings.Contains(l, "level=ERROR") {
						t.Log(l)
					}
				}
			}
			assert.Positive(t, hold.Held, "no request was held: php-fpm was never seen down")
			assert.Less(t, longest, started.Sub(stopped)+5*time.Second)
			assert.Contains(t, s.log.String(), "holding new requests")
			assert.Contains(t, s.log.String(), "answers again")
			s.checkNoLeaks(t)
		})
	}
}

// php-fpm down longer than --upstream-hold: every request gets a clean 502
// at the bound, not before and not much after; nothing hangs, and the
// goroutines and files come back to their baseline.
func TestFPMDownPastHold(t *testing.T) {
	s := startFaultStack(t, stackOptions{
		args:  []string{"--upstream-hold", "1s"},
		fpm:   testenv.FPMOptions{Children: 4},
		nginx: testenv.NginxOptions{KeepConn: true},
	})
	code, body := s.nginx.Get(t, "/index.php")
	require.Equal(t, 200, code, body)
	s.fpm.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
	defer cancel()
	ss := loadUntil(ctx, s.nginx.Client(), s.nginx.URL+"/slow.php?ms=2")
	require.NotEmpty(t, ss)
	for _, x := range ss {
		took := x.end.Sub(x.start)
		assert.Equal(t, 502, x.code, "%v %q", x.err, x.body)
		assert.Contains(t, x.body, "application server unavailable")
		assert.GreaterOrEqual(t, took, 900*time.Millisecond, "failed before the bound")
		assert.Less(t, took, 4*time.Second, "hung past the bound")
	}
	hold := s.pool.HoldStats()
	t.Logf("%d requests, all 502 after %v..%v; held %d, timed out %d", len(ss), minLatency(ss), maxLatency(samplesOf(ss)), hold.Held, hold.TimedOut)
	assert.Equal(t, uint64(len(ss)), hold.TimedOut)
	assert.Contains(t, s.log.String(), "end of the hold")

	s.fpm.Start(t)
	code, body = s.nginx.Get(t, "/index.php")
	assert.Equal(t, 200, code, body)
	s.checkNoLeaks(t)
}

func samplesOf(ss []served) []loadSample {
	out := make([]loadSample, len(ss))
	for i, s := range ss {
		out[i] = s.loadSample
	}
	return out
}

func minLatency(ss []served) time.Duration {
	d := time.Duration(1<<63 - 1)
	for _, s := range ss {
		d = min(d, s.end.Sub(s.start))
	}
	return d
}

// Blue/green: two php-fpm pools behind one incpathd. Under load, new
// requests switch blue → green → blue three times, the idle pool stopped
// and started again each time, as an upgrade of php-fpm does: no request
// fails, and once `incpathd upstream use NAME --wait` has returned no
// request reaches the other pool (php_ini_loaded_file() tells the pools
// apart). Each switch is in the status, with who asked.
func TestBlueGreen(t *testing.T) {
	site := testenv.NewSite(t, "A", "B")
	dir := t.TempDir()
	fpms := map[string]*testenv.FPM{}
	var args []string
	for _, name := range []string{"blue", "green"} {
		fpms[name] = testenv.StartFPM(t, testenv.FPMOptions{Children: 4, Listen: "unix:" + filepath.Join(dir, name+".sock")})
		args = append(args, "--upstream", name+"="+fpms[name].Addr)
	}
	ctl := "unix:" + filepath.Join(dir, "control.sock")
	var set *upstream.Set
	testHookServing = func(d *daemon) { set = d.set }
	defer func() { testHookServing = nil }()
	addr, log, _ := startIncpathd(t, append(args,
		"--listen", testenv.FreeAddr(t),
		"--search-replace-pattern", site.Current,
		"--max-conns", "4",
		"--control", ctl,
	)...)
	require.NotNil(t, set)
	nginx := testenv.StartNginx(t, testenv.NginxOptions{Root: site.Current, FastCGIPass: addr, KeepConn: true})
	poolOf := func(body string) string {
		var r testenv.InfoReport
		if json.Unmarshal([]byte(body), &r) != nil {
			return ""
		}
		for name, f := range fpms {
			if r.LoadedINI == f.INIPath {
				return name
			}
		}
		return ""
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan []served, 1)
	// Half of them POSTs: one in flight on a pool that is stopped would
	// fail, not be replayed.
	go func() { done <- loadMixed(ctx, nginx.Client(), nginx.URL+"/info.php", restartClients/2) }()
	time.Sleep(500 * time.Millisecond)

	var switches []switched
	from := "blue"
	for range 3 {
		for _, to := range []string{"green", "blue"} {
			var out, errb strings.Builder
			t0 := time.Now()
			code := run(context.Background(), []string{"upstream", "use", to, "--wait", "--timeout", "20s", "--control", ctl},
				func(string) string { return "" }, &out, &errb, nil)
			require.Equal(t, 0, code, "use %s: %s%s", to, out.String(), errb.String())
			switches = append(switches, switched{to, t0, time.Now()})
			require.Contains(t, out.String(), "no request in flight on the other pools")
			// The old pool is idle: stop it and start it again.
			fpms[from].Stop()
			time.Sleep(200 * time.Millisecond)
			fpms[from].Start(t)
			from = to
		}
	}
	time.Sleep(300 * time.Millisecond)
	cancel()
	ss := <-done

	for _, f := range failures(ss) {
		t.Errorf("failed: %d %v %q", f.code, f.err, f.body)
	}
	// A request sent after a switch returned is never served by the pool
	// it left.
	wrong := 0
	for _, s := range ss {
		if s.code != 200 {
			continue
		}
		got := poolOf(s.body)
		require.NotEmpty(t, got, "which pool? %q", s.body)
		if ok := allowedPools(switches, s.start, s.end); !slices.Contains(ok, got) {
			wrong++
			t.Errorf("request sent at %v, answered at %v, was served by %s; want %v", s.start.Format("15:04:05.000000"), s.end.Format("15:04:05.000000"), got, ok)
		}
	}
	var took []string
	for _, sw := range switches {
		took = append(took, fmt.Sprintf("%s %v", sw.to, sw.at.Sub(sw.issued).Round(time.Millisecond)))
	}
	t.Logf("%d requests, %d failed, %d on the wrong pool; use --wait took: %s", len(ss), len(failures(ss)), wrong, strings.Join(took, ", "))

	// The status shows the pools and the switches, with who asked.
	var out strings.Builder
	require.Equal(t, 0, run(context.Background(), []string{"upstream", "status", "--control", ctl}, func(string) string { return "" }, &out, io.Discard, nil))
	assert.Regexp(t, `blue\s+unix:\S+blue.sock\s+\*`, out.String())
	c := &control.Client{Addr: ctl}
	defer c.Close()
	st, err := c.Status(context.Background())
	require.NoError(t, err)
	require.NotNil(t, st.Upstreams)
	assert.Equal(t, "blue", st.Upstreams.Active)
	require.Len(t, st.Actions, 6)
	assert.Equal(t, "upstream use", st.Actions[0].Name)
	assert.Equal(t, []string{"blue"}, st.Actions[0].Args)
	assert.Equal(t, "green -> blue", st.Actions[0].Result)
	assert.Equal(t, os.Getuid(), st.Actions[0].Peer.UID, "who asked: this process")
	assert.Equal(t, os.Getpid(), st.Actions[0].Peer.PID)
	assert.Contains(t, log.String(), `msg="control action" action="upstream use"`)

	// incpathd status shows both pools and the switches, with who asked.
	out.Reset()
	require.Equal(t, 0, run(context.Background(), []string{"status", "--control", ctl}, func(string) string { return "" }, &out, io.Discard, nil))
	assert.Regexp(t, `(?m)^\s+blue\s+unix:\S+blue.sock\s+\*\s+\d+\s+\d+`, out.String())
	assert.Regexp(t, `(?m)^\s+green\s+unix:\S+green.sock\s+\d+`, out.String())
	assert.Regexp(t, fmt.Sprintf(`(?m)^  \d\d:\d\d:\d\d  upstream use blue  by uid %d \(pid %d\): green -> blue$`, os.Getuid(), os.Getpid()), out.String())
	out.Reset()
	require.Equal(t, 0, run(context.Background(), []string{"status", "--json", "--control", ctl}, func(string) string { return "" }, &out, io.Discard, nil))
	var view control.View
	require.NoError(t, json.Unmarshal([]byte(out.String()), &view))
	require.NotNil(t, view.Upstream)
	var pools []upstream.PoolStatus
	require.NoError(t, json.Unmarshal(view.Upstream.Pools, &pools))
	assert.Len(t, pools, 2)
	var acts []control.Action
	require.NoError(t, json.Unmarshal(view.Upstream.Actions, &acts))
	assert.Len(t, acts, 6)
}

// switched is one `incpathd upstream use NAME --wait` of TestBlueGreen.
type switched struct {
	to         string
	issued, at time.Time // run, and returned
}

// allowedPools returns the pools that may serve a request sent at start
// and answered at end: the one the last switch that had returned by start
// went to, and those of the switches run before end (a request reaches
// incpathd a moment after it is sent).
func allowedPools(sw []switched, start, end time.Time) []string {
	ok := []string{"blue"}
	for _, s := range sw {
		switch {
		case !start.Before(s.at):
			ok = []string{s.to}
		case s.issued.Before(end):
			ok = append(ok, s.to)
		}
	}
	return ok
}

// unitExecStart returns the arguments of the last non-empty ExecStart of a
// systemd unit file, continuation lines joined.
func unitExecStart(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var cmd string
	lines := strings.Split(string(b), "\n")
	for i := 0; i < len(lines); i++ {
		v, ok := strings.CutPrefix(lines[i], "ExecStart=")
		if !ok || v == "" {
			continue
		}
		for strings.HasSuffix(v, "\\") && i+1 < len(lines) {
			i++
			v = strings.TrimSuffix(v, "\\") + " " + lines[i]
		}
		cmd = v
	}
	require.NotEmpty(t, cmd, "no ExecStart in %s", path)
	return strings.Fields(cmd)[1:]
}

// The blue/green drop-in starts incpathd with flags it accepts: two named
// pools on the sockets of php-fpm-pool@.service, and the control endpoint
// php-upgrade.sh talks to.
func TestBlueGreenUnit(t *testing.T) {
	args := unitExecStart(t, "../../deploy/systemd/incpathd-bluegreen.conf")
	c, err := parse(args, func(string) string { return "" }, io.Discard)
	require.NoError(t, err, "%v", args)
	assert.Equal(t, []namedAddr{{"blue", "unix:/run/php/blue.sock"}, {"green", "unix:/run/php/green.sock"}}, c.up.pools)
	assert.Equal(t, "unix:/run/incpathd/control.sock", c.control)
	unit, err := os.ReadFile("../../deploy/systemd/php-fpm-pool@.service")
	require.NoError(t, err)
	assert.Contains(t, string(unit), "/etc/php-fpm-pool/%i.conf")
	assert.Contains(t, string(unit), "KillSignal=SIGQUIT")
}

// Bad --upstream values are refused with a message that names the flag.
func TestUpstreamFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"--upstream", "blue=unix:/a", "--upstream", "blue=unix:/b"}, `--upstream: pool "blue" given twice`},
		{[]string{"--upstream", "unix:/a", "--upstream", "unix:/b"}, `pool "default" given twice; name each pool`},
		{[]string{"--upstream", "bl ue=unix:/a"}, `--upstream: "bl ue": a pool name`},
		{[]string{"--upstream", "blue="}, `--upstream: "blue=": no address`},
		{[]string{"--upstream", "blue=unix:run/a.sock"}, "must be absolute"},
		{[]string{"--upstream-hold", "-1s"}, "--upstream-hold: -1s is negative"},
		{[]string{"--upstream-hold-queue", "0"}, "--upstream-hold-queue: 0 must be at least 1"},
	} {
		_, err := parse(tc.args, func(string) string { return "" }, io.Discard)
		if assert.Error(t, err, "%v", tc.args) {
			assert.Contains(t, err.Error(), tc.err)
		}
	}
	c, err := parse(nil, func(k string) string {
		if k == "INCPATHD_UPSTREAM" {
			return "blue=127.0.0.1:9000,green=127.0.0.1:9002"
		}
		return ""
	}, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, []namedAddr{{"blue", "127.0.0.1:9000"}, {"green", "127.0.0.1:9002"}}, c.up.pools, "pools from the environment, comma-separated")
	assert.Equal(t, 10*time.Second, c.up.hold, "the hold is on by default")
}

// `incpathd upstream` refuses what it cannot do before asking anything.
func TestUpstreamCmdUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"upstream", "use", "green"}, "no control endpoint"},
		{[]string{"upstream", "--control", "unix:/nonexistent.sock"}, "give use NAME or status"},
		{[]string{"upstream", "use", "--control", "unix:/nonexistent.sock"}, "name one pool"},
		{[]string{"upstream", "flip", "--control", "unix:/nonexistent.sock"}, `unknown command "flip"`},
		{[]string{"upstream", "use", "green", "--wait", "--timeout", "0", "--control", "unix:/x.sock"}, "must be positive"},
	} {
		var errb strings.Builder
		code := run(context.Background(), tc.args, func(string) string { return "" }, io.Discard, &errb, nil)
		assert.Equal(t, 2, code, "%v", tc.args)
		assert.Contains(t, errb.String(), tc.want, "%v", tc.args)
	}
	var errb strings.Builder
	code := run(context.Background(), []string{"upstream", "status", "--control", "unix:/nonexistent/control.sock"}, func(string) string { return "" }, io.Discard, &errb, nil)
	assert.Equal(t, 1, code)
	assert.Contains(t, errb.String(), "nonexistent/control.sock")
}
