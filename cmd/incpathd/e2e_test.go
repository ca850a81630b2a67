package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
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

	"github.com/incpathd/incpathd/internal/testenv"
	"github.com/incpathd/incpathd/internal/testsupport"
)

// stack is real nginx → incpathd (in this process) → real php-fpm, in front
// of a two-release site.
type stack struct {
	site  *testenv.Site
	fpm   *testenv.FPM
	nginx *testenv.Nginx
	addr  string // incpathd's
	log   *testsupport.LogBuffer
	stop  func()
}

type stackOptions struct {
	args  []string // extra incpathd flags
	fpm   testenv.FPMOptions
	nginx testenv.NginxOptions
}

// startIncpathd runs incpathd in this process until the test ends. Unless
// args name a --pool-probe flag, the pool probe is off: its call to the
// upstream, before the first pinned request, would be one more request and
// connection for the tests that count them (pinning_test.go tests it).
// Likewise opcache management, unless args name an --opcache flag
// (opcache_test.go tests it).
func startIncpathd(t testing.TB, args ...string) (addr string, log *testsupport.LogBuffer, stop func()) {
	t.Helper()
	if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--pool-probe") }) {
		args = append(args, "--pool-probe=false")
	}
	if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--opcache") }) {
		args = append(args, "--opcache=false")
	}
	return startIncpathdEnv(t, func(string) string { return "" }, args...)
}

// startIncpathdEnv runs incpathd in this process with getenv as its
// environment, as a container would start it, until the test ends or stop
// is called.
func startIncpathdEnv(t testing.TB, getenv func(string) string, args ...string) (addr string, log *testsupport.LogBuffer, stop func()) {
	t.Helper()
	log = &testsupport.LogBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, getenv, io.Discard, log, ready) }()
	select {
	case addr = <-ready:
	case code := <-done:
		cancel()
		t.Fatalf("incpathd exited with %d before serving:\n%s", code, log)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatalf("incpathd did not start:\n%s", log)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(40 * time.Second):
				t.Errorf("incpathd did not stop")
			}
		})
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("incpathd log:\n%s", log)
		}
	})
	return addr, log, stop
}

func startStack(t *testing.T, o stackOptions) *stack {
	t.Helper()
	s := &stack{site: testenv.NewSite(t, "A", "B")}
	s.fpm = testenv.StartFPM(t, o.fpm)
	args := []string{
		"--listen", testenv.FreeAddr(t),
		"--upstream", s.fpm.Addr,
		"--search-replace-pattern", s.site.Current,
		"--include-path", ".:" + s.site.Current + "/include:/usr/share/php",
		"--max-conns", "4",
		"--connect-timeout", "2s",
		"--log-level", "debug",
	}
	s.addr, s.log, s.stop = startIncpathd(t, append(args, o.args...)...)
	no := o.nginx
	no.Root = s.site.Current
	no.FastCGIPass = s.addr
	s.nginx = testenv.StartNginx(t, no)
	return s
}

func (s *stack) index(t *testing.T, path string) testenv.IndexReport {
	t.Helper()
	code, body := s.nginx.Get(t, path)
	require.Equal(t, 200, code, "GET %s: %s\nnginx: %s", path, body, s.nginx.Log())
	var r testenv.IndexReport
	require.NoError(t, json.Unmarshal([]byte(body), &r), "GET %s: %q", path, body)
	return r
}

// assertPinned checks that everything index.php saw (its report r) comes
// from release rel of site: the script, its include_path include,
// DOCUMENT_ROOT and the paths php-fpm saw, with the include_path every test
// stack gives incpathd.
func assertPinned(t *testing.T, site *testenv.Site, r testenv.IndexReport, rel string) {
	t.Helper()
	dir := site.Releases[rel]
	assert.Equal(t, rel, r.Release, "release of the script")
	if assert.NotNil(t, r.IncludeRelease, "include through include_path found nothing; include_path %q", r.IncludePath) {
		assert.Equal(t, rel, *r.IncludeRelease, "release of the include_path include")
	}
	if assert.NotNil(t, r.DocrootRelease) {
		assert.Equal(t, rel, *r.DocrootRelease, "release read through DOCUMENT_ROOT")
	}
	if assert.NotNil(t, r.DocumentRoot) {
		assert.Equal(t, dir, *r.DocumentRoot)
	}
	if assert.NotNil(t, r.ScriptFilename) {
		assert.Equal(t, filepath.Join(dir, "index.php"), *r.ScriptFilename)
	}
	assert.Equal(t, filepath.Join(dir, "index.php"), r.File)
	assert.Equal(t, ".:"+dir+"/include:/usr/share/php", r.IncludePath)
}

func TestE2EPinsAndFlips(t *testing.T) {
	s := startStack(t, stackOptions{
		args:  []string{"--realpath-every", "300ms"},
		fpm:   testenv.FPMOptions{Opcache: true},
		nginx: testenv.NginxOptions{KeepConn: true},
	})
	for range 3 {
		assertPinned(t, s.site, s.index(t, "/index.php"), "A")
	}
	require.NoError(t, s.site.Flip("B"))
	time.Sleep(400 * time.Millisecond) // wait out --realpath-every
	for range 3 {
		assertPinned(t, s.site, s.index(t, "/index.php"), "B")
	}
	// The web server's own name comes through.
	r := s.index(t, "/index.php")
	require.NotNil(t, r.ServerSoftware)
	assert.True(t, strings.HasPrefix(*r.ServerSoftware, "nginx/"), *r.ServerSoftware)

	// PATH_INFO style URL: PATH_TRANSLATED is pinned too.
	r = s.index(t, "/index.php/a/b")
	assertPinned(t, s.site, r, "B")
	if assert.NotNil(t, r.PathInfo) && assert.NotNil(t, r.PathTranslated) {
		assert.Equal(t, "/a/b", *r.PathInfo)
		assert.Equal(t, s.site.Releases["B"]+"/a/b", *r.PathTranslated)
	}

	// Flip back: the worker that served B must not keep B's include_path.
	require.NoError(t, s.site.Flip("A"))
	time.Sleep(400 * time.Millisecond)
	for range 8 {
		assertPinned(t, s.site, s.index(t, "/index.php"), "A")
	}
}

// Without keep-alive nginx opens a connection per request, and a request
// in a --docroot-sapi-list front end trusts DOCUMENT_ROOT as sent.
func TestE2ETrustedDocroot(t *testing.T) {
	s := startStack(t, stackOptions{
		args:  []string{"--docroot-sapi-list", "nginx", "--realpath-sapi-list", ""},
		nginx: testenv.NginxOptions{RealpathRoot: true},
	})
	assertPinned(t, s.site, s.index(t, "/index.php"), "A")
	require.NoError(t, s.site.Flip("B"))
	assertPinned(t, s.site, s.index(t, "/index.php"), "B") // nginx resolved it, no cache of ours
}

func TestE2EBigBodies(t *testing.T) {
	s := startStack(t, stackOptions{nginx: testenv.NginxOptions{KeepConn: true}})
	const size = 20 << 20

	// 20 MiB up: PHP hashes what it read.
	req, err := http.NewRequest("POST", s.nginx.URL+"/echo.php", testenv.PatternReader(size))
	require.NoError(t, err)
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := s.nginx.Client().Do(req)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, 200, resp.StatusCode, "%s", body)
	var echo testenv.EchoReport
	require.NoError(t, json.Unmarshal(body, &echo), "%s", body)
	assert.Equal(t, int64(size), echo.Length)
	assert.Equal(t, testenv.PatternSHA256(size), echo.SHA256)

	// 20 MiB down, hashed as it streams.
	resp, err = s.nginx.Client().Get(s.nginx.URL + "/big.php?mb=20")
	require.NoError(t, err)
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, int64(size), n)
	assert.Equal(t, testenv.PatternSHA256(size), hex.EncodeToString(h.Sum(nil)))

	// The connection is still good for the next request.
	assertPinned(t, s.site, s.index(t, "/index.php"), "A")
}

// php-fpm down: a request waits in the hold for --upstream-hold, then gets
// a clean 502 that says why; php-fpm back, the pool recovers.
func TestE2EUpstreamDown(t *testing.T) {
	s := startStack(t, stackOptions{args: []string{"--upstream-hold", "500ms"}, nginx: testenv.NginxOptions{KeepConn: true}})
	assertPinned(t, s.site, s.index(t, "/index.php"), "A")
	s.fpm.Stop()
	start := time.Now()
	code, body := s.nginx.Get(t, "/index.php")
	took := time.Since(start)
	assert.Equal(t, 502, code, "%s", body)
	assert.Contains(t, body, "application server unavailable")
	assert.GreaterOrEqual(t, took, 500*time.Millisecond, "held for --upstream-hold")
	assert.Less(t, took, 3*time.Second, "a refused connection must fail at the bound")
	assert.Contains(t, s.log.String(), "cannot connect to upstream")
	assert.Contains(t, s.log.String(), "still down at the end of the hold")

	// php-fpm back: the pool recovers.
	s.fpm.Start(t)
	assertPinned(t, s.site, s.index(t, "/index.php"), "A")
}

// With --upstream-hold 0 a refused connection fails at once, as before
// the hold.
func TestE2EUpstreamDownNoHold(t *testing.T) {
	s := startStack(t, stackOptions{args: []string{"--upstream-hold", "0"}, nginx: testenv.NginxOptions{KeepConn: true}})
	assertPinned(t, s.site, s.index(t, "/index.php"), "A")
	s.fpm.Stop()
	start := time.Now()
	code, body := s.nginx.Get(t, "/index.php")
	assert.Equal(t, 502, code, "%s", body)
	assert.Less(t, time.Since(start), 2*time.Second, "a refused connection must fail fast")
	assert.NotContains(t, s.log.String(), "holding new requests")
}

func TestE2EDanglingDocroot(t *testing.T) {
	s := startStack(t, stackOptions{args: []string{"--realpath-every", "0"}, nginx: testenv.NginxOptions{NoTryFiles: true}})
	require.NoError(t, os.RemoveAll(s.site.Releases["A"]))
	code, body := s.nginx.Get(t, "/index.php")
	assert.Equal(t, 503, code, "%s", body)
	assert.Contains(t, body, "document root cannot be resolved")
	assert.Contains(t, s.log.String(), s.site.Current, "the log names the path")
	assert.NotContains(t, body, s.site.Root, "the client is not shown server paths")
}

func TestE2EOutsideAllowedRoot(t *testing.T) {
	s := startStack(t, stackOptions{args: []string{"--allow-root", "/nonexistent/releases"}})
	code, body := s.nginx.Get(t, "/index.php")
	assert.Equal(t, 403, code, "%s", body)
	assert.Contains(t, s.log.String(), "outside")
}

// php-fpm closes a kept connection whenever a worker reaches
// pm.max_requests; the pool must notice, or retry, and the user must never
// see it.
func TestE2EWorkersRecycled(t *testing.T) {
	s := startStack(t, stackOptions{
		fpm:   testenv.FPMOptions{Children: 2, MaxRequests: 2},
		args:  []string{"--max-conns", "2"},
		nginx: testenv.NginxOptions{KeepConn: true},
	})
	var wg sync.WaitGroup
	errs := make(chan string, 200)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				resp, err := s.nginx.Client().Get(s.nginx.URL + "/slow.php?ms=0")
				if err != nil {
					errs <- err.Error()
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "A" {
					errs <- resp.Status + " " + string(body)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	var failed []string
	for e := range errs {
		failed = append(failed, e)
	}
	assert.Empty(t, failed, "100 requests with workers recycled every 2")
}
