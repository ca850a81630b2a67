package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/control"
	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/fpmcall"
	"github.com/incpathd/incpathd/internal/testenv"
	"github.com/incpathd/incpathd/internal/testsupport"
)

// buildRelease writes a release of n PHP files: index.php, which includes
// lib/f0.php and prints the release's name, and lib/f1..f(n-2).php, which
// no request runs, so only a warm can put them in opcache. The files are
// dated age ago.
func buildRelease(t testing.TB, dir string, n int, age time.Duration) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "lib"), 0o755))
	files := map[string]string{
		"index.php": "<?php require __DIR__ . '/lib/f0.php'; echo 'release=', basename(__DIR__), ' f0=', f0(), \"\\n\";\n",
	}
	for i := range n - 1 {
		files[fmt.Sprintf("lib/f%d.php", i)] = fmt.Sprintf("<?php\nfunction f%d() {\n    $a = [];\n    for ($i = 0; $i < %d; $i++) { $a[] = $i * 2; }\n    return array_sum($a);\n}\n", i, i%50+1)
	}
	when := time.Now().Add(-age)
	for name, body := range files {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
		require.NoError(t, os.Chtimes(p, when, when))
	}
}

// opcacheSite is a site whose releases are built by the test.
type opcacheSite struct {
	root, releases, current string
}

func newOpcacheSite(t testing.TB) *opcacheSite {
	root, err := filepath.EvalSymlinks(t.TempDir())
	require.NoError(t, err)
	s := &opcacheSite{root: root, releases: filepath.Join(root, "releases"), current: filepath.Join(root, "current")}
	require.NoError(t, os.MkdirAll(s.releases, 0o755))
	return s
}

// lightLoad sends GET / through nginx from two clients until stop, counting
// answers that are not a release's page.
type lightLoad struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	firstFail  string
	stop       chan struct{}
	wg         sync.WaitGroup
}

func startLightLoad(t *testing.T, n *testenv.Nginx, clients int, every time.Duration) *lightLoad {
	l := &lightLoad{stop: make(chan struct{})}
	for range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				case <-time.After(every):
				}
				code, body := n.Get(t, "/")
				if code == 200 && strings.HasPrefix(body, "release=") {
					l.ok.Add(1)
					continue
				}
				l.failed.Add(1)
				l.mu.Lock()
				if l.firstFail == "" {
					l.firstFail = fmt.Sprintf("%d %q", code, body)
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

func (l *lightLoad) end() { close(l.stop); l.wg.Wait() }

// opcacheStack is nginx → incpathd (with --control) → php-fpm.
type opcacheStack struct {
	site   *opcacheSite
	fpm    *testenv.FPM
	nginx  *testenv.Nginx
	ctl    string
	log    *testsupport.LogBuffer
	caller *fpmcall.Caller // the test's own look into opcache
}

func startOpcacheStack(t *testing.T, ini map[string]string, first string, files int, age time.Duration, args ...string) *opcacheStack {
	t.Helper()
	s := &opcacheStack{site: newOpcacheSite(t)}
	dir := filepath.Join(s.site.releases, first)
	buildRelease(t, dir, files, age)
	require.NoError(t, os.Symlink("releases/"+first, s.site.current))
	s.fpm = testenv.StartFPM(t, testenv.FPMOptions{Children: 4, Opcache: true, INI: ini})
	s.ctl = "unix:" + filepath.Join(t.TempDir(), "control.sock")
	var addr string
	addr, s.log, _ = startIncpathd(t, append([]string{
		"--listen", testenv.FreeAddr(t),
		"--upstream", s.fpm.Addr,
		"--search-replace-pattern", s.site.current,
		"--max-conns", "4",
		"--control", s.ctl,
		"--pool-probe-dir", t.TempDir(),
		"--opcache-check-every", "100ms",
	}, args...)...)
	s.nginx = testenv.StartNginx(t, testenv.NginxOptions{Root: s.site.current, FastCGIPass: addr, KeepConn: true, Keepalive: 4})
	pool := &fcgi.Pool{Address: s.fpm.Addr, MaxConns: 1}
	t.Cleanup(func() { pool.Close() })
	s.caller = &fpmcall.Caller{Pool: pool, Dir: t.TempDir()}
	require.NoError(t, s.caller.Start())
	t.Cleanup(func() { s.caller.Close() })
	return s
}

// cached is how many scripts opcache holds below dir.
func (s *opcacheStack) cached(t *testing.T, dir string) int64 {
	t.Helper()
	st, err := s.caller.OpcacheStatus(context.Background(), []string{dir})
	require.NoError(t, err)
	return st.Releases[dir].Scripts
}

func (s *opcacheStack) cmd(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	code := run(context.Background(), args, func(k string) string {
		if k == "INCPATHD_CONTROL" {
			return s.ctl
		}
		return ""
	}, &out, &out, nil)
	return code, out.String()
}

// Issue #12: 12 deploys of 200-file releases with opcache.max_accelerated_files
// =500 (983 hash slots), each through activate --warm, then drain and
// delete the old release, under a light load. Without incpathd owning
// opcache, the live release runs uncached from the sixth deploy on. Here,
// right after each flip all 200 files are cached, still after the old
// release is gone, no request fails, and the php-fpm master stays the same.
func TestOpcacheTwelveDeploys(t *testing.T) {
	const files = 200
	s := startOpcacheStack(t, map[string]string{"opcache.max_accelerated_files": "500"}, "R00", files, time.Hour)
	master := s.fpm.PID()
	l := startLightLoad(t, s.nginx, 2, 10*time.Millisecond)
	defer l.end()
	resetsBefore := int64(0)
	prev := filepath.Join(s.site.releases, "R00")
	for i := 1; i <= 12; i++ {
		dir := filepath.Join(s.site.releases, fmt.Sprintf("R%02d", i))
		// The first release is built just now: the warm must wait for
		// opcache.file_update_protection (2 s) or cache nothing.
		age := time.Hour
		if i == 1 {
			age = 0
		}
		buildRelease(t, dir, files, age)
		code, out := s.cmd(t, "activate", dir, "--link", s.site.current, "--warm")
		require.Equal(t, 0, code, "deploy %d: %s\n%s", i, out, s.log)
		require.Contains(t, out, fmt.Sprintf("%d PHP files", files), "deploy %d", i)
		require.NotContains(t, out, "activating anyway", "deploy %d", i)
		if i == 1 {
			assert.Contains(t, out, "waited", "the fresh release was waited for")
		}
		assert.EqualValues(t, files, s.cached(t, dir), "deploy %d: right after the flip:\n%s", i, out)

		code, out = s.cmd(t, "drain", prev, "--timeout", "30s")
		require.Equal(t, 0, code, "deploy %d: %s", i, out)
		require.NoError(t, os.RemoveAll(prev))
		// The drained release is evicted (and opcache reset when full)
		// within a few checks.
		require.Eventually(t, func() bool {
			st, err := (&control.Client{Addr: s.ctl}).View(context.Background())
			if err != nil || st.Opcache == nil {
				return false
			}
			for _, r := range st.Opcache.Releases {
				if r.Path == prev && r.State != "evicted" {
					return false
				}
			}
			return true
		}, 20*time.Second, 50*time.Millisecond, "deploy %d: %s not evicted\n%s", i, prev, s.log)
		assert.EqualValues(t, files, s.cached(t, dir), "deploy %d: after the old release is gone", i)
		prev = dir
	}
	l.end()
	l.stop = make(chan struct{}) // for the deferred end
	st, err := s.caller.OpcacheStatus(context.Background(), nil)
	require.NoError(t, err)
	t.Logf("requests: %d ok, %d failed; opcache restarts: %d manual, %d hash, %d oom; keys %d/%d",
		l.ok.Load(), l.failed.Load(), st.ManualRestarts, st.HashRestarts, st.OOMRestarts, st.Keys, st.MaxKeys)
	assert.Zero(t, l.failed.Load(), "first failure: %s", l.firstFail)
	assert.Positive(t, l.ok.Load())
	assert.Greater(t, st.ManualRestarts, resetsBefore, "opcache was reset to free slots")
	assert.Zero(t, st.HashRestarts+st.OOMRestarts, "opcache never restarted by itself")
	assert.Equal(t, master, s.fpm.PID(), "the php-fpm master is the same process")
	assert.NotRegexp(t, `SIGSEGV|exited on signal|SIGKILL`, s.fpm.Log())
	assert.Contains(t, s.log.String(), "opcache reset with requests held")

	code, out := s.cmd(t, "status")
	require.Equal(t, 0, code, out)
	t.Logf("incpathd status:\n%s", out)
	assert.Regexp(t, `(?m)^`+regexp.QuoteMeta(prev)+` +live +\d+ +200 `, out, "the live release, its requests and its scripts")
	assert.Contains(t, out, "hash slots ")
	assert.Contains(t, out, "last reset: ")
	assert.Contains(t, out, "upstream  "+s.fpm.Addr)
	code, out = s.cmd(t, "status", "--json")
	require.Equal(t, 0, code, out)
	var v control.View
	require.NoError(t, json.Unmarshal([]byte(out), &v))
	require.NotNil(t, v.Opcache)
	assert.EqualValues(t, 983, v.Opcache.Status.MaxKeys)
	os := v.Opcache.Stats
	t.Logf("incpathd: %d warms in %.2fs, %d evictions in %.3fs, %d resets (%d called off) holding requests %.3fs in all, %d requests held",
		os.Warms, os.WarmSeconds, os.Evictions, os.EvictSeconds, os.Resets, os.ResetsCalledOff, os.ResetPauseSeconds, v.Opcache.Gate.HeldTotal)
	assert.Positive(t, os.Resets)
	assert.Zero(t, os.WarmFailures)
}

// startPlainStack is startOpcacheStack with php-fpm options of the test's
// choosing.
func startPlainStack(t *testing.T, fpm testenv.FPMOptions, basedir bool) *opcacheStack {
	t.Helper()
	s := &opcacheStack{site: newOpcacheSite(t)}
	buildRelease(t, filepath.Join(s.site.releases, "R00"), 20, time.Hour)
	buildRelease(t, filepath.Join(s.site.releases, "R01"), 20, time.Hour)
	require.NoError(t, os.Symlink("releases/R00", s.site.current))
	if basedir {
		// The pool's open_basedir holds the site, not the helper's
		// directory.
		fpm.AdminINI = map[string]string{"open_basedir": s.site.root}
	}
	s.fpm = testenv.StartFPM(t, fpm)
	s.ctl = "unix:" + filepath.Join(t.TempDir(), "control.sock")
	var addr string
	addr, s.log, _ = startIncpathd(t,
		"--listen", testenv.FreeAddr(t),
		"--upstream", s.fpm.Addr,
		"--search-replace-pattern", s.site.current,
		"--control", s.ctl,
		"--pool-probe=false",
		"--pool-probe-dir", t.TempDir(),
		"--opcache-check-every", "100ms",
	)
	s.nginx = testenv.StartNginx(t, testenv.NginxOptions{Root: s.site.current, FastCGIPass: addr})
	return s
}

// php-fpm without opcache, or one that cannot read the helper script:
// warm says so and fails, activate --warm flips anyway, status says why,
// and requests are served as before.
func TestOpcacheUnavailable(t *testing.T) {
	for name, c := range map[string]struct {
		fpm  testenv.FPMOptions
		want string
	}{
		"without opcache": {testenv.FPMOptions{Children: 2}, "php-fpm runs without opcache"},
		"opcache off":     {testenv.FPMOptions{Children: 2, Opcache: true, INI: map[string]string{"opcache.enable": "0"}}, "php-fpm runs without opcache"},
		// The pool's open_basedir leaves the helper's directory out.
		"helper unreadable": {testenv.FPMOptions{Children: 2, Opcache: true}, "readable by php-fpm at the same path"},
	} {
		t.Run(name, func(t *testing.T) {
			s := startPlainStack(t, c.fpm, name == "helper unreadable")
			r01 := filepath.Join(s.site.releases, "R01")
			code, out := s.cmd(t, "warm", r01)
			assert.Equal(t, 1, code, out)
			assert.Contains(t, out, "not warmed")
			assert.Contains(t, out, c.want)

			code, out = s.cmd(t, "activate", r01, "--link", s.site.current, "--warm")
			assert.Equal(t, 0, code, out)
			assert.Contains(t, out, "activating anyway")
			assert.Contains(t, out, "current: releases/R01")

			code, out = s.cmd(t, "status")
			assert.Equal(t, 0, code, out)
			assert.Contains(t, out, "opcache   unavailable")
			assert.Contains(t, out, c.want)
			assert.Contains(t, out, s.site.current)
			code, body := s.nginx.Get(t, "/")
			assert.Equal(t, 200, code, body)
			assert.Contains(t, body, "release=R01")
			assert.Eventually(t, func() bool {
				return strings.Contains(s.log.String(), "opcache cannot be managed; requests are served as before")
			}, 10*time.Second, 50*time.Millisecond)
		})
	}
}

// fpmCPU is the CPU time php-fpm's master and workers have used, from
// /proc (utime + stime).
func fpmCPU(t *testing.T, fpm *testenv.FPM) time.Duration {
	t.Helper()
	var ticks int64
	for _, pid := range append([]int{fpm.PID()}, fpm.Workers()...) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue // a worker gone meanwhile
		}
		// Fields after the command name, which is in parentheses.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
		var u, s int64
		fmt.Sscan(f[11], &u)
		fmt.Sscan(f[12], &s)
		ticks += u + s
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}

// The first requests after a flip, with and without a warm, on a release
// of 2,000 files with opcache's default settings: php-fpm's CPU for the
// first requests, the first request's time, and the warm's. A measurement,
// not a check: INCPATHD_OPCACHE_BENCH=1 go test -run TestOpcacheColdStart -v
// ./cmd/incpathd (README, Opcache across deploys).
func TestOpcacheColdStart(t *testing.T) {
	if os.Getenv("INCPATHD_OPCACHE_BENCH") == "" {
		t.Skip("a measurement: set INCPATHD_OPCACHE_BENCH=1")
	}
	const files, requests, rounds = 2000, 40, 3
	s := startOpcacheStack(t, nil, "R00", 2, time.Hour)
	for i := range 2 * rounds {
		warm := i%2 == 1
		dir := filepath.Join(s.site.releases, fmt.Sprintf("R%02d", i+1))
		buildRelease(t, dir, files, time.Hour)
		// index.php includes every file, as a framework's request loads
		// its classes.
		require.NoError(t, os.WriteFile(filepath.Join(dir, "index.php"), []byte(
			"<?php foreach (glob(__DIR__ . '/lib/*.php') as $f) { require $f; } echo 'release=', basename(__DIR__), \"\\n\";\n"), 0o644))
		old := time.Now().Add(-time.Hour)
		require.NoError(t, os.Chtimes(filepath.Join(dir, "index.php"), old, old))
		args := []string{"activate", dir, "--link", s.site.current}
		cpu0 := fpmCPU(t, s.fpm)
		start := time.Now()
		if warm {
			args = append(args, "--warm")
		}
		code, out := s.cmd(t, args...)
		require.Equal(t, 0, code, out)
		flip := time.Since(start)
		warmCPU := fpmCPU(t, s.fpm) - cpu0
		cpu1 := fpmCPU(t, s.fpm)
		// Four clients at once, as many as the pool's workers: each
		// worker compiles what it runs until opcache has a copy.
		var first atomic.Int64
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range requests / 4 {
					t0 := time.Now()
					code, body := s.nginx.Get(t, "/")
					assert.Equal(t, 200, code, body)
					if d := int64(time.Since(t0)); j == 0 && d > first.Load() {
						first.Store(d)
					}
				}
			}()
		}
		wg.Wait()
		reqCPU := fpmCPU(t, s.fpm) - cpu1
		mode := "without warm"
		if warm {
			mode = "with warm   "
		}
		t.Logf("| %s | activate %6.0f ms | php-fpm CPU during activate %5.0f ms | slowest first request %6.1f ms | php-fpm CPU, first %d requests %5.0f ms |",
			mode, ms(flip), ms(warmCPU), ms(time.Duration(first.Load())), requests, ms(reqCPU))
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// The opcache flags and the helper's directory refuse what they cannot
// use, naming the flag.
func TestOpcacheFlags(t *testing.T) {
	noEnv := func(string) string { return "" }
	c, err := parse(nil, noEnv, io.Discard)
	require.NoError(t, err)
	assert.True(t, c.oc.opcache)
	assert.Equal(t, 2*time.Second, c.oc.checkEvery)
	assert.Equal(t, 10*time.Second, c.oc.maxPause)
	for args, want := range map[string]string{
		"--opcache-check-every=0": "--opcache-check-every",
		"--opcache-max-pause=1ms": "--opcache-max-pause",
		"--pool-probe-dir=/srv/site/releases/x --allow-root=/srv/site/releases":             "outside every docroot",
		"--pool-probe-dir=/srv/site/current/tmp --search-replace-pattern=/srv/site/current": "lies inside /srv/site/current",
	} {
		_, err := parse(strings.Fields(args), noEnv, io.Discard)
		require.Error(t, err, args)
		assert.Contains(t, err.Error(), want, args)
	}
	_, err = parse(strings.Fields("--pool-probe-dir=/run/php --allow-root=/srv/site/releases"), noEnv, io.Discard)
	assert.NoError(t, err)
}

// Warm and status refuse bad usage with exit status 2 before they ask the
// daemon.
func TestWarmStatusUsage(t *testing.T) {
	for _, args := range [][]string{
		{"warm"},
		{"warm", "/srv/a", "/srv/b", "--control", "unix:/x"},
		{"warm", "/srv/a"}, // no control endpoint
		{"warm", "/srv/a", "--control", "unix:/x", "--timeout", "0"},
		{"status", "extra", "--control", "unix:/x"},
		{"status"},
		{"activate", "/srv/a", "--link", "/srv/current", "--warm"},
	} {
		var out bytes.Buffer
		code := run(context.Background(), args, func(string) string { return "" }, &out, &out, nil)
		assert.Equal(t, 2, code, "%v: %s", args, out.String())
	}
	var out bytes.Buffer
	code := run(context.Background(), []string{"status", "--control", "unix:" + filepath.Join(t.TempDir(), "none.sock")}, func(string) string { return "" }, &out, &out, nil)
	assert.Equal(t, 1, code)
	assert.Contains(t, out.String(), "incpathd status: control:")
}
