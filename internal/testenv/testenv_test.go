package testenv

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeTB records Skip and Fatal instead of ending the real test.
type fakeTB struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Skip(args ...any) {
	f.skipped, f.msg = true, fmt.Sprint(args...)
	runtime.Goexit()
}

func (f *fakeTB) Fatal(args ...any) {
	f.failed, f.msg = true, fmt.Sprint(args...)
	runtime.Goexit()
}

// call runs fn on its own goroutine, as Skip and Fatal end it.
func (f *fakeTB) call(fn func(testing.TB)) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
}

func TestRequireBinary(t *testing.T) {
	t.Setenv("CI", "")
	path := RequireBinary(t, "no-such-binary", "s[h]")
	assert.Equal(t, "sh", filepath.Base(path))

	// Nothing to find: an empty PATH and no sbin directories.
	t.Setenv("PATH", t.TempDir())
	saved := sbinDirs
	sbinDirs = nil
	t.Cleanup(func() { sbinDirs = saved })

	f := &fakeTB{TB: t}
	f.call(func(tb testing.TB) { RequireBinary(tb, "php-fpm8.2", "php-fpm*") })
	assert.True(t, f.skipped, "skipped outside CI")
	assert.Contains(t, f.msg, "package php-fpm")

	t.Setenv("CI", "true")
	f = &fakeTB{TB: t}
	f.call(func(tb testing.TB) { RequireBinary(tb, "nginx") })
	assert.True(t, f.failed, "failed in CI")
	assert.Contains(t, f.msg, "package nginx-light")
}

func TestPackageFor(t *testing.T) {
	for _, tt := range []struct {
		names []string
		want  string
	}{
		{[]string{"php-fpm8.2", "php-fpm*"}, "php-fpm"},
		{[]string{"php8.2"}, "php-cli"},
		{[]string{"nginx"}, "nginx-light"},
		{[]string{"frob*"}, "frob"},
	} {
		assert.Equal(t, tt.want, packageFor(tt.names), "%q", tt.names)
	}
}

func TestFreeAddr(t *testing.T) {
	addr := FreeAddr(t)
	require.True(t, strings.HasPrefix(addr, "127.0.0.1:"), addr)
	l, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	l.Close()

	sock := FreeSocket(t, "php-fpm.sock")
	require.True(t, strings.HasPrefix(sock, "unix:/"), sock)
	assert.Less(t, len(sock)-len("unix:"), 100)
}

func TestNewSite(t *testing.T) {
	s := NewSite(t)
	require.Len(t, s.Releases, 2)
	for name, dir := range s.Releases {
		b, err := os.ReadFile(filepath.Join(dir, ReleaseMarker))
		require.NoError(t, err)
		assert.Equal(t, name+"\n", string(b))
		for _, f := range []string{"index.php", "torture.php", "include/lib_release.php"} {
			fi, err := os.Stat(filepath.Join(dir, f))
			require.NoError(t, err)
			assert.True(t, fi.ModTime().Before(time.Now().Add(-time.Hour)), "%s is old enough for opcache", f)
		}
	}
	target, err := os.Readlink(s.Current)
	require.NoError(t, err)
	assert.Equal(t, filepath.Join("releases", "A"), target, "relative link to the first release")

	require.NoError(t, s.Flip("B"))
	active, err := s.Active()
	require.NoError(t, err)
	assert.Equal(t, "B", active)
	resolved, err := filepath.EvalSymlinks(s.Current)
	require.NoError(t, err)
	assert.Equal(t, s.Releases["B"], resolved)
	assert.Error(t, s.Flip("C"))

	s3 := NewSite(t, "r1", "r2", "r3")
	active, err = s3.Active()
	require.NoError(t, err)
	assert.Equal(t, "r1", active)
}

func TestFlipIsAtomic(t *testing.T) {
	s := NewSite(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			assert.NoError(t, s.Flip([]string{"A", "B"}[i%2]))
		}
	}()
	for range 2000 {
		b, err := os.ReadFile(filepath.Join(s.Current, ReleaseMarker))
		if !assert.NoError(t, err, "current must always resolve") {
			break
		}
		assert.Contains(t, []string{"A\n", "B\n"}, string(b))
	}
	close(stop)
	wg.Wait()
	leftovers, _ := filepath.Glob(filepath.Join(s.Root, ".current.*"))
	assert.Empty(t, leftovers)
}

func TestPatternReader(t *testing.T) {
	var buf bytes.Buffer
	r := PatternReader(100_000)
	p := make([]byte, 777) // not a multiple of the period
	for {
		n, err := r.Read(p)
		buf.Write(p[:n])
		if err != nil {
			break
		}
	}
	require.Equal(t, 100_000, buf.Len())
	for i, c := range buf.Bytes() {
		if c != byte(i%251) {
			t.Fatalf("byte %d = %d; want %d", i, c, i%251)
		}
	}
}

// stack is php-fpm and nginx serving a fresh site.
type stack struct {
	site  *Site
	fpm   *FPM
	nginx *Nginx
}

// includePathExtra sends include_path through PHP_VALUE, as tests of the
// include_path behaviour do.
func includePathExtra(s *Site) string {
	return fmt.Sprintf(`fastcgi_param PHP_VALUE "include_path=\".:%s\"";`, s.IncludeDir())
}

func startStack(t *testing.T, fo FPMOptions, no NginxOptions) *stack {
	t.Helper()
	s := NewSite(t)
	start := time.Now()
	fpm := StartFPM(t, fo)
	fpmReady := time.Since(start)
	no.Root = s.Current
	no.FastCGIPass = fpm.Addr
	// Extra comes last: a second PHP_VALUE replaces the first.
	no.Extra = includePathExtra(s) + "\n" + no.Extra
	start = time.Now()
	ngx := StartNginx(t, no)
	t.Logf("php-fpm ready in %v, nginx in %v", fpmReady.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	return &stack{site: s, fpm: fpm, nginx: ngx}
}

func getIndex(t *testing.T, n *Nginx, path string) IndexReport {
	t.Helper()
	code, body := n.Get(t, path)
	require.Equal(t, http.StatusOK, code, body)
	var r IndexReport
	require.NoError(t, json.Unmarshal([]byte(body), &r), body)
	return r
}

func deref(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}

func TestServesSite(t *testing.T) {
	st := startStack(t, FPMOptions{}, NginxOptions{
		Extra: "fastcgi_param INCPATH_SAPI fpm-fcgi;",
	})
	s, n := st.site, st.nginx

	r := getIndex(t, n, "/index.php/extra/path?q=1")
	assert.Equal(t, "A", r.Release)
	assert.Equal(t, "A", deref(r.IncludeRelease))
	assert.Equal(t, filepath.Join(s.Releases["A"], "include", "lib_release.php"), deref(r.IncludeFile))
	assert.Equal(t, "A", deref(r.DocrootRelease))
	assert.Equal(t, filepath.Join(s.Releases["A"], "index.php"), r.File, "__FILE__ is resolved")
	assert.Equal(t, s.Current, deref(r.DocumentRoot))
	assert.Equal(t, filepath.Join(s.Current, "index.php"), deref(r.ScriptFilename))
	assert.Equal(t, "/index.php", deref(r.ScriptName))
	assert.Equal(t, "/extra/path", deref(r.PathInfo))
	assert.Equal(t, s.Current+"/extra/path", deref(r.PathTranslated))
	assert.True(t, strings.HasPrefix(deref(r.ServerSoftware), "nginx/"), deref(r.ServerSoftware))
	assert.Equal(t, ".:"+s.IncludeDir(), r.IncludePath)
	assert.Equal(t, "", r.OpenBasedir)
	assert.Equal(t, "fpm-fcgi", deref(r.IncpathSAPI))
	assert.Equal(t, "fpm-fcgi", r.SAPI)

	r = getIndex(t, n, "/")
	assert.Equal(t, "A", r.Release, "index.php is the index")

	code, body := n.Get(t, "/torture.php")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "A A A A\n", body)

	code, body = n.Get(t, "/slow.php?ms=30")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "A\n", body)

	code, body = n.Get(t, "/release.txt")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "A\n", body, "nginx serves static files")

	code, _ = n.Get(t, "/missing.php")
	assert.Equal(t, http.StatusNotFound, code)

	for _, q := range []struct {
		query string
		size  int64
	}{{"mb=3", 3 << 20}, {"bytes=1000", 1000}, {"bytes=0", 0}} {
		code, body := n.Get(t, "/big.php?"+q.query)
		assert.Equal(t, http.StatusOK, code)
		assert.Equal(t, q.size, int64(len(body)), q.query)
		assert.Equal(t, PatternSHA256(q.size), sha256hex([]byte(body)), q.query)
	}

	const size = 20 << 20
	resp, err := n.Client().Post(n.URL+"/echo.php", "application/octet-stream", PatternReader(size))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var e EchoReport
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&e))
	assert.Equal(t, EchoReport{SHA256: PatternSHA256(size), Length: size, ContentLength: ptr(int64(size)), Method: "POST"}, e)
}

func ptr[T any](v T) *T { return &v }

func sha256hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// TestFlip checks the two classic behaviours after a flip, with one worker
// so that its caches are the ones warmed: nginx's $realpath_root serves the
// new release at once, while $document_root with PHP's default realpath
// cache keeps serving the old one.
func TestFlip(t *testing.T) {
	s := NewSite(t)
	fpm := StartFPM(t, FPMOptions{Children: 1})
	plain := StartNginx(t, NginxOptions{Root: s.Current, FastCGIPass: fpm.Addr, Extra: includePathExtra(s)})
	realpath := StartNginx(t, NginxOptions{Root: s.Current, FastCGIPass: fpm.Addr, Extra: includePathExtra(s), RealpathRoot: true})

	assert.Equal(t, "A", getIndex(t, plain, "/index.php").Release)
	r := getIndex(t, realpath, "/index.php")
	assert.Equal(t, "A", r.Release)
	assert.Equal(t, s.Releases["A"], deref(r.DocumentRoot))

	require.NoError(t, s.Flip("B"))

	r = getIndex(t, realpath, "/index.php")
	assert.Equal(t, "B", r.Release, "$realpath_root sees the flip at once")
	assert.Equal(t, s.Releases["B"], deref(r.DocumentRoot))
	assert.Equal(t, filepath.Join(s.Releases["B"], "index.php"), deref(r.ScriptFilename))

	assert.Equal(t, "A", getIndex(t, plain, "/index.php").Release, "PHP's realpath cache keeps the old release")
}

// TestFlipNoRealpathCache checks that INI reaches php.ini: without a realpath
// cache, $document_root serves the new release after a flip.
func TestFlipNoRealpathCache(t *testing.T) {
	st := startStack(t, FPMOptions{Children: 1, INI: map[string]string{"realpath_cache_size": "0"}}, NginxOptions{})
	assert.Equal(t, "A", getIndex(t, st.nginx, "/index.php").Release)
	require.NoError(t, st.site.Flip("B"))
	r := getIndex(t, st.nginx, "/index.php")
	assert.Equal(t, "B", r.Release)
	assert.Equal(t, "B", deref(r.IncludeRelease))
}

func getInfo(t *testing.T, n *Nginx, ini ...string) InfoReport {
	t.Helper()
	code, body := n.Get(t, "/info.php?ini="+strings.Join(ini, ","))
	require.Equal(t, http.StatusOK, code, body)
	var r InfoReport
	require.NoError(t, json.Unmarshal([]byte(body), &r), body)
	return r
}

func TestOpcache(t *testing.T) {
	t.Run("on", func(t *testing.T) {
		st := startStack(t, FPMOptions{Opcache: true}, NginxOptions{})
		r := getInfo(t, st.nginx, "opcache.enable", "opcache.validate_timestamps", "opcache.revalidate_freq",
			"opcache.revalidate_path", "realpath_cache_size", "realpath_cache_ttl", "include_path")
		assert.True(t, r.OpcacheLoaded)
		assert.True(t, r.OpcacheStatus, "opcache_get_status() is an array")
		assert.Equal(t, map[string]any{
			"opcache.enable":              "1",
			"opcache.validate_timestamps": "1",
			"opcache.revalidate_freq":     "2",
			"opcache.revalidate_path":     "0",
			"realpath_cache_size":         "4096K",
			"realpath_cache_ttl":          "120",
			"include_path":                ".:" + st.site.IncludeDir(),
		}, r.INI)
		assert.Equal(t, st.fpm.INIPath, r.LoadedINI, "only the generated php.ini is read")
		assert.Equal(t, false, r.ScannedINI, "no conf.d is scanned")
	})
	t.Run("off", func(t *testing.T) {
		st := startStack(t, FPMOptions{}, NginxOptions{})
		r := getInfo(t, st.nginx, "opcache.enable", "include_path")
		assert.False(t, r.OpcacheLoaded)
		assert.False(t, r.OpcacheStatus)
		assert.Equal(t, false, r.INI["opcache.enable"], "unknown setting")
	})
}

func TestAdminINI(t *testing.T) {
	admin := map[string]string{"memory_limit": "96M", "default_socket_timeout": "7"}
	st := startStack(t, FPMOptions{AdminINI: admin}, NginxOptions{})
	r := getInfo(t, st.nginx, "memory_limit", "default_socket_timeout")
	assert.Equal(t, "96M", r.INI["memory_limit"])
	assert.Equal(t, "7", r.INI["default_socket_timeout"])

	// php-fpm applies PHP_VALUE without checking whether a setting was
	// fixed by php_admin_value.
	st = startStack(t, FPMOptions{AdminINI: admin}, NginxOptions{
		Extra: `fastcgi_param PHP_VALUE "memory_limit=64M\ndefault_socket_timeout=9";`,
	})
	r = getInfo(t, st.nginx, "memory_limit", "default_socket_timeout")
	t.Logf("with PHP_VALUE: memory_limit %v, default_socket_timeout %v", r.INI["memory_limit"], r.INI["default_socket_timeout"])
}

func TestUnixSocketKeepConn(t *testing.T) {
	st := startStack(t, FPMOptions{Listen: FreeSocket(t, "fpm.sock"), Children: 2}, NginxOptions{KeepConn: true})
	require.True(t, strings.HasPrefix(st.fpm.Addr, "unix:/"))
	pids := map[int]bool{}
	for range 20 {
		pids[getIndex(t, st.nginx, "/index.php").PID] = true
	}
	assert.NotEmpty(t, pids)
	c, err := st.fpm.Dial()
	require.NoError(t, err)
	c.Close()

	// A killed php-fpm leaves its socket file behind; a new one replaces it.
	st.fpm.Kill()
	code, _ := st.nginx.Get(t, "/index.php")
	assert.Equal(t, http.StatusBadGateway, code)
	st.fpm.Start(t)
	assert.Equal(t, "A", getIndex(t, st.nginx, "/index.php").Release)
}

func TestMaxRequests(t *testing.T) {
	st := startStack(t, FPMOptions{Children: 1, MaxRequests: 2}, NginxOptions{})
	pids := map[int]bool{}
	for range 6 {
		pids[getIndex(t, st.nginx, "/index.php").PID] = true
	}
	assert.Len(t, pids, 3, "a worker serves two requests, then is replaced")
}

func TestStopKillStart(t *testing.T) {
	st := startStack(t, FPMOptions{Children: 2}, NginxOptions{})
	f, n := st.fpm, st.nginx
	ok := func(msg string) {
		t.Helper()
		code, body := n.Get(t, "/slow.php")
		assert.Equal(t, http.StatusOK, code, msg)
		assert.Equal(t, "A\n", body, msg)
	}
	down := func(msg string) {
		t.Helper()
		code, _ := n.Get(t, "/slow.php")
		assert.Equal(t, http.StatusBadGateway, code, msg)
	}
	ok("started")
	require.Len(t, f.Workers(), 2)

	pgid := f.PID()
	f.Kill()
	assert.Empty(t, groupMembers(pgid), "Kill reaps master and workers")
	assert.Zero(t, f.PID())
	down("killed")
	f.Kill() // no-op
	f.Start(t)
	ok("started after Kill")

	pgid = f.PID()
	f.Stop()
	assert.Empty(t, groupMembers(pgid), "Stop waits for master and workers")
	f.Stop() // no-op
	down("stopped")
	f.Start(t)
	ok("started after Stop")

	pid, workers := f.PID(), f.Workers()
	f.Reload(t)
	assert.Equal(t, pid, f.PID(), "reload keeps the master")
	assert.NotEqual(t, workers, f.Workers(), "reload replaces the workers")
	ok("reloaded")

	ngx := n.PID()
	n.Stop()
	n.Stop()
	assert.Empty(t, groupMembers(ngx))
}

// groupMembers returns the live processes of process group pgid; zombies
// count as gone.
func groupMembers(pgid int) []int {
	return scanProc(func(st procStat) bool { return st.pgrp == pgid && st.state != 'Z' && st.state != 'X' })
}

// anyInGroup returns the processes of process group pgid, zombies included.
func anyInGroup(pgid int) []int {
	return scanProc(func(st procStat) bool { return st.pgrp == pgid })
}

func TestNoProcessLeftAfterCleanup(t *testing.T) {
	var groups []int
	var members []int
	t.Run("serve", func(t *testing.T) {
		st := startStack(t, FPMOptions{Children: 3}, NginxOptions{Workers: 2, KeepConn: true})
		getIndex(t, st.nginx, "/index.php")
		groups = []int{st.fpm.PID(), st.nginx.PID()}
		for _, g := range groups {
			members = append(members, anyInGroup(g)...)
		}
		assert.GreaterOrEqual(t, len(members), 1+3+1+2, "masters and workers")
	})
	require.NotEmpty(t, groups)
	for _, g := range groups {
		assert.Empty(t, anyInGroup(g), "process group %d is empty, zombies included", g)
	}
	for _, pid := range members {
		if st, ok := readStat(pid); ok {
			assert.NotContains(t, groups, st.pgrp, "process %d left over", pid)
		}
	}
}

// TestHelperProcess is not a real test: TestServersDieWithTestBinary runs it
// in a child test binary that exits without running its cleanups.
func TestHelperProcess(t *testing.T) {
	if os.Getenv("TESTENV_HELPER") != "1" {
		t.Skip("helper for TestServersDieWithTestBinary")
	}
	st := startStack(t, FPMOptions{Children: 2}, NginxOptions{})
	getIndex(t, st.nginx, "/index.php")
	fmt.Printf("GROUPS %d %d\n", st.fpm.PID(), st.nginx.PID())
	os.Stdout.Sync()
	os.Exit(3) // like a -timeout panic: no cleanups run
}

// TestServersDieWithTestBinary checks that servers stop, workers included,
// when the test binary dies without running cleanups.
func TestServersDieWithTestBinary(t *testing.T) {
	RequireBinary(t, "php-fpm8.2", "php-fpm*", "php-fpm")
	RequireBinary(t, "nginx")
	prepareReaper() // the servers end up as this process's orphans
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "TESTENV_HELPER=1")
	out, _ := cmd.CombinedOutput()
	var groups []int
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "GROUPS "); ok {
			for _, f := range strings.Fields(rest) {
				g, err := strconv.Atoi(f)
				require.NoError(t, err)
				groups = append(groups, g)
			}
		}
	}
	require.Len(t, groups, 2, "helper output:\n%s", out)
	deadline := time.Now().Add(10 * time.Second)
	for _, g := range groups {
		for len(groupMembers(g)) > 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		assert.Empty(t, groupMembers(g), "process group %d outlived the test binary", g)
		killGroup(g)
		reapGroup(g)
	}
}
