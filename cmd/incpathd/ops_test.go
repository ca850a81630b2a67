package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/internal/testenv"
)

func TestPrintConfig(t *testing.T) {
	env := map[string]string{"INCPATHD_UPSTREAM": "unix:/run/php/fpm.sock", "INCPATHD_MAINTENANCE_FILE": "/run/incpathd/maintenance"}
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"--print-config", "--max-conns", "8", "--allow-root", "/srv/a", "--allow-root", "/srv/b"},
		func(k string) string { return env[k] }, &out, &errb, nil)
	require.Equal(t, 0, code, errb.String())
	lines := map[string][]string{}
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		f := strings.Fields(l)
		lines[f[0]] = f[1:]
	}
	assert.Equal(t, []string{"VALUE", "FROM"}, lines["FLAG"])
	assert.Equal(t, []string{"8", "flag"}, lines["--max-conns"])
	assert.Equal(t, []string{"/srv/a,/srv/b", "flag"}, lines["--allow-root"])
	assert.Equal(t, []string{"unix:/run/php/fpm.sock", "env", "INCPATHD_UPSTREAM"}, lines["--upstream"])
	assert.Equal(t, []string{"/run/incpathd/maintenance", "env", "INCPATHD_MAINTENANCE_FILE"}, lines["--maintenance-file"])
	assert.Equal(t, []string{"127.0.0.1:9001", "default"}, lines["--listen"])
	assert.Equal(t, []string{`""`, "default"}, lines["--metrics"])
	assert.Equal(t, []string{"1m0s", "default"}, lines["--maintenance-retry-after"])
	assert.NotContains(t, lines, "--print-config")

	// An invalid value is refused, not printed.
	out.Reset()
	errb.Reset()
	code = run(context.Background(), []string{"--print-config", "--metrics", "nowhere"}, func(string) string { return "" }, &out, &errb, nil)
	assert.Equal(t, 2, code)
	assert.Contains(t, errb.String(), "--metrics")
	assert.Empty(t, out.String())
}

func TestParseRefusesBadOpsValues(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--metrics", "9101"}, "--metrics"},
		{[]string{"--metrics", "unix:relative.sock"}, "--metrics"},
		{[]string{"--metrics-mode", "rw"}, "--metrics-mode"},
		{[]string{"--upstream-ping", "fpm-ping"}, "--upstream-ping"},
		{[]string{"--upstream-ping-response", ""}, "--upstream-ping-response"},
		{[]string{"--maintenance-retry-after", "-1s"}, "--maintenance-retry-after"},
		{[]string{"--maintenance-page", "/x.html"}, "--maintenance-page"},
		{[]string{"--maintenance-file", "/m", "--maintenance-allow", "somewhere"}, "--maintenance-allow"},
		{[]string{"--maintenance-allow", "10.0.0.0/8"}, "--maintenance-allow"},
	} {
		_, err := parse(tc.args, func(string) string { return "" }, &bytes.Buffer{})
		if assert.Error(t, err, "%v", tc.args) {
			assert.Contains(t, err.Error(), tc.want)
		}
	}
	c, err := parse([]string{"--metrics", ":9101"}, func(string) string { return "" }, &bytes.Buffer{})
	require.NoError(t, err)
	addr, err := metricsAddr(c.ops.metrics)
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:9101", addr, "a bare port stays on loopback")
}

func TestMaintenanceCommand(t *testing.T) {
	file := filepath.Join(t.TempDir(), "maintenance")
	env := map[string]string{"INCPATHD_MAINTENANCE_FILE": file}
	getenv := func(k string) string { return env[k] }
	do := func(args ...string) (int, string) {
		var out bytes.Buffer
		code := run(context.Background(), append([]string{"maintenance"}, args...), getenv, &out, &out, nil)
		return code, out.String()
	}
	code, out := do("status")
	assert.Equal(t, 0, code)
	assert.Contains(t, out, "off")

	code, _ = do("on")
	assert.Equal(t, 0, code)
	assert.FileExists(t, file)
	code, out = do("status")
	assert.Equal(t, 0, code)
	assert.Contains(t, out, "on")
	code, _ = do("on") // again: still on, no error
	assert.Equal(t, 0, code)

	code, _ = do("off")
	assert.Equal(t, 0, code)
	assert.NoFileExists(t, file)
	code, _ = do("off")
	assert.Equal(t, 0, code, "off when already off")

	other := filepath.Join(t.TempDir(), "flag")
	code, _ = do("on", "--maintenance-file", other)
	assert.Equal(t, 0, code)
	assert.FileExists(t, other, "the flag wins over the environment")

	code, out = do("sideways")
	assert.Equal(t, 2, code)
	assert.Contains(t, out, "sideways")
	code, out = do()
	assert.Equal(t, 2, code)
	assert.Contains(t, out, "usage")
	delete(env, "INCPATHD_MAINTENANCE_FILE")
	code, out = do("on")
	assert.Equal(t, 2, code)
	assert.Contains(t, out, "INCPATHD_MAINTENANCE_FILE")
}

// httpGet fetches url and returns the status, a header and the body.
func httpGet(t *testing.T, c *http.Client, url string) (int, http.Header, string) {
	t.Helper()
	resp, err := c.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, string(b)
}

// Maintenance mode through real nginx: on, every request gets the 503 page
// and php-fpm (stopped, to prove it) is never asked; off, PHP again.
func TestE2EMaintenance(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "maintenance")
	page := filepath.Join(dir, "maintenance.html")
	require.NoError(t, os.WriteFile(page, []byte("<h1>Back at noon</h1>\n"), 0o644))
	s := startStack(t, stackOptions{
		args: []string{"--maintenance-file", file, "--maintenance-page", page, "--maintenance-retry-after", "2m",
			"--maintenance-allow", "192.0.2.0/24"},
		nginx: testenv.NginxOptions{KeepConn: true},
	})
	assertPinned(t, s.site, s.index(t, "/index.php"), "A")

	var out bytes.Buffer
	require.Equal(t, 0, run(context.Background(), []string{"maintenance", "on", "--maintenance-file", file}, os.Getenv, &out, &out, nil), out.String())
	// The inotify event reaches incpathd a moment after the file appears.
	require.Eventually(t, func() bool { return strings.Contains(s.log.String(), "maintenance mode on") },
		5*time.Second, time.Millisecond, "maintenance mode never turned on")
	s.fpm.Stop()
	logFrom := len(s.log.String())
	code, hdr, body := httpGet(t, s.nginx.Client(), s.nginx.URL+"/index.php")
	assert.Equal(t, 503, code)
	assert.Equal(t, "1", hdr.Get("X-Maintenance-Mode"))
	assert.Equal(t, "120", hdr.Get("Retry-After"))
	assert.Equal(t, "text/html; charset=utf-8", hdr.Get("Content-Type"))
	assert.Equal(t, "<h1>Back at noon</h1>\n", body)
	// A POST with a body, then the kept connection again.
	resp, err := s.nginx.Client().Post(s.nginx.URL+"/echo.php", "text/plain", strings.NewReader(strings.Repeat("x", 200<<10)))
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Equal(t, 503, resp.StatusCode)
	code, _, _ = httpGet(t, s.nginx.Client(), s.nginx.URL+"/index.php")
	assert.Equal(t, 503, code)
	assert.NotContains(t, s.log.String()[logFrom:], "upstream", "php-fpm was never asked")

	s.fpm.Start(t)
	require.Equal(t, 0, run(context.Background(), []string{"maintenance", "off", "--maintenance-file", file}, os.Getenv, &out, &out, nil))
	require.Eventually(t, func() bool {
		code, _, _ = httpGet(t, s.nginx.Client(), s.nginx.URL+"/index.php")
		return code == 200
	}, 5*time.Second, 5*time.Millisecond, "maintenance mode never ended")
	assertPinned(t, s.site, s.index(t, "/index.php"), "A")
	assert.Contains(t, s.log.String(), "maintenance mode off")
}

// An allow-listed client (nginx passes 127.0.0.1 as REMOTE_ADDR) reaches
// PHP while the site is down for everyone else.
func TestE2EMaintenanceAllow(t *testing.T) {
	file := filepath.Join(t.TempDir(), "maintenance")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	s := startStack(t, stackOptions{args: []string{"--maintenance-file", file, "--maintenance-allow", "127.0.0.1"}})
	assertPinned(t, s.site, s.index(t, "/index.php"), "A")

	other := startStack(t, stackOptions{args: []string{"--maintenance-file", file, "--maintenance-allow", "10.0.0.0/8"}})
	code, hdr, body := httpGet(t, other.nginx.Client(), other.nginx.URL+"/index.php")
	assert.Equal(t, 503, code)
	assert.Equal(t, "1", hdr.Get("X-Maintenance-Mode"))
	assert.Contains(t, body, "maintenance", "the built-in page")
}

func TestE2EMetricsAndHealth(t *testing.T) {
	maddr := testenv.FreeAddr(t)
	s := startStack(t, stackOptions{
		args:  []string{"--metrics", maddr, "--upstream-ping", "/fpm-ping"},
		nginx: testenv.NginxOptions{KeepConn: true},
	})
	for range 4 {
		assertPinned(t, s.site, s.index(t, "/index.php"), "A")
	}
	c := &http.Client{Timeout: 10 * time.Second}
	base := "http://" + maddr

	code, _, body := httpGet(t, c, base+"/healthz")
	assert.Equal(t, 200, code)
	assert.Equal(t, "ok\n", body)
	code, _, body = httpGet(t, c, base+"/readyz")
	assert.Equal(t, 200, code, body)

	// The observer runs after the answer: wait for the last request to count.
	var metrics string
	require.Eventually(t, func() bool {
		_, _, metrics = httpGet(t, c, base+"/metrics")
		return strings.Contains(metrics, `incpathd_requests_total{code="2xx",frontend="nginx"} 4`)
	}, 5*time.Second, 10*time.Millisecond, "requests not counted:\n%s", metrics)
	for _, want := range []string{
		"incpathd_request_duration_seconds_count 4",
		"incpathd_requests_in_flight 0",
		`incpathd_upstream_connections{pool="default",state="busy"} 0`,
		`incpathd_upstream_active{pool="default"} 1`,
		`incpathd_upstream_down{pool="default"} 0`,
		"incpathd_upstream_dials_total ",
		"incpathd_resolver_cache_hits_total ",
		`incpathd_build_info{goversion=`,
		// The docroot link and where it points, from the watcher.
		`incpathd_symlink_target_info{link="` + s.site.Current + `",target="` + s.site.Releases["A"] + `"} 1`,
	} {
		assert.Contains(t, metrics, want)
	}

	// A request in flight is counted on its release.
	slow := make(chan struct{})
	go func() {
		defer close(slow)
		resp, err := s.nginx.Client().Get(s.nginx.URL + "/slow.php?ms=1500")
		if err == nil {
			resp.Body.Close()
		}
	}()
	require.Eventually(t, func() bool {
		_, _, metrics = httpGet(t, c, base+"/metrics")
		return strings.Contains(metrics, `incpathd_release_requests_in_flight{release="`+s.site.Releases["A"]+`"} 1`)
	}, 5*time.Second, 20*time.Millisecond, "per-release in-flight missing:\n%s", metrics)
	<-slow
	assert.Contains(t, s.log.String(), `msg=request method=GET uri=/index.php status=200`, "the access line at debug level")

	s.fpm.Stop()
	start := time.Now()
	code, _, body = httpGet(t, c, base+"/readyz")
	assert.Equal(t, 503, code)
	assert.Contains(t, body, "not ready: pool default")
	assert.Less(t, time.Since(start), 2*time.Second, "a readiness check does not wait in the hold")
	code, _, _ = httpGet(t, c, base+"/healthz")
	assert.Equal(t, 200, code, "alive without php-fpm")
}

func TestMetricsUnixSocket(t *testing.T) {
	sock := testenv.FreeSocket(t, "metrics.sock")
	path := strings.TrimPrefix(sock, "unix:")
	fpm := testenv.StartFPM(t, testenv.FPMOptions{})
	_, _, stop := startIncpathd(t, "--listen", testenv.FreeAddr(t), "--upstream", fpm.Addr, "--metrics", sock)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "owner only by default")
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}}
	code, _, body := httpGet(t, c, "http://incpathd/readyz")
	assert.Equal(t, 200, code, body)
	stop()
	assert.NoFileExists(t, path, "removed at exit")
}
