package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// FPMOptions configures StartFPM. The zero value is a usable pool.
type FPMOptions struct {
	// Listen is the address php-fpm listens on: "host:port" or "unix:/path".
	// If empty, a free loopback port is used.
	Listen string

	// Children is the number of workers (pm = static). If zero, 4.
	Children int

	// MaxRequests is pm.max_requests: a worker exits after serving that many
	// requests and is replaced. If zero, workers are never recycled.
	MaxRequests int

	// Opcache loads opcache with production defaults: validate_timestamps
	// on, revalidate_freq 2, revalidate_path off, use_cwd on. If false,
	// opcache is not loaded at all.
	Opcache bool

	// INI holds php.ini settings written after the defaults, which they
	// override, for example {"realpath_cache_size": "0"} or
	// {"opcache.revalidate_path": "1"}. Requests can still change them with
	// PHP_VALUE where PHP allows. Values are written as given; quote those
	// with INI special characters.
	INI map[string]string

	// AdminINI holds php_admin_value settings of the pool, which ini_set
	// cannot change. A PHP_VALUE param still can: php-fpm 8.2 applies it
	// without checking (TestAdminINI shows it).
	AdminINI map[string]string

	// RequestTerminateTimeout is request_terminate_timeout, in whole seconds
	// rounded up. If zero, requests are never killed.
	RequestTerminateTimeout time.Duration

	// SlowlogTimeout is request_slowlog_timeout, in whole seconds rounded up:
	// backtraces of slower requests go to FPM.SlowlogPath. If zero, there is
	// no slow log.
	SlowlogTimeout time.Duration

	// Pool holds lines added at the end of the pool section, after the
	// generated ones, which they override (php-fpm keeps the last value of
	// a key): for example the pool lines of an example configuration. A
	// listen line here must agree with Listen, which tells the tests where
	// to connect.
	Pool string

	// Binary is the php-fpm binary. If empty, RequireBinary looks for
	// php-fpm8.2, php-fpm* and php-fpm.
	Binary string
}

func (o *FPMOptions) children() int {
	if o.Children <= 0 {
		return 4
	}
	return o.Children
}

// FPM is a php-fpm master process and its pool, started by StartFPM.
// Its methods are safe for concurrent use.
type FPM struct {
	// Addr is where the pool listens: "127.0.0.1:PORT" or "unix:/path", the
	// notation of fastcgi_pass.
	Addr string
	// LogPath is php-fpm's error log; workers' stdout and stderr go there too.
	LogPath string
	// SlowlogPath is the slow request log, written if SlowlogTimeout is set.
	SlowlogPath string
	// ConfPath and INIPath are the generated php-fpm.conf and php.ini.
	ConfPath, INIPath string

	bin     string
	outPath string // the master's own stdout and stderr

	mu   sync.Mutex
	proc *process
}

// StartFPM writes a php.ini and a php-fpm.conf into t.TempDir(), runs
// php-fpm in the foreground with them, and returns once the pool accepts
// connections. The machine's php.ini and conf.d are not read. php-fpm is
// stopped and waited for when the test ends; if the test failed, the end of
// its log is logged.
func StartFPM(t testing.TB, o FPMOptions) *FPM {
	t.Helper()
	bin := o.Binary
	if bin == "" {
		bin = RequireBinary(t, "php-fpm8.2", "php-fpm*", "php-fpm")
	}
	dir := t.TempDir()
	f := &FPM{
		LogPath:     filepath.Join(dir, "php-fpm.log"),
		SlowlogPath: filepath.Join(dir, "php-fpm.slow.log"),
		ConfPath:    filepath.Join(dir, "php-fpm.conf"),
		INIPath:     filepath.Join(dir, "php.ini"),
		bin:         bin,
		outPath:     filepath.Join(dir, "php-fpm.out"),
	}
	t.Cleanup(func() {
		f.Stop()
		if t.Failed() {
			t.Logf("php-fpm log %s:\n%s", f.LogPath, tail(f.LogPath, 4096))
		}
	})

	ext := ""
	if o.Opcache {
		var err error
		if ext, err = opcacheDirective(bin); err != nil {
			t.Fatal(err)
		}
	}
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.INIPath, phpINI(&o, ext, tmp), 0o644); err != nil {
		t.Fatal(err)
	}

	for attempt := 1; ; attempt++ {
		f.Addr = o.Listen
		if o.Listen == "" {
			f.Addr = FreeAddr(t)
		}
		if err := os.WriteFile(f.ConfPath, fpmConf(&o, f), 0o644); err != nil {
			t.Fatal(err)
		}
		from := fileSize(f.LogPath)
		err := f.start()
		if err == nil {
			return f
		}
		log := readFrom(f.LogPath, from)
		if o.Listen == "" && attempt < 5 && bytes.Contains(log, []byte("Address already in use")) {
			continue // someone took the free port first
		}
		t.Fatalf("%v\nphp-fpm log:\n%s\nphp-fpm output:\n%s", err, log, tail(f.outPath, 4096))
	}
}

// Start starts php-fpm again, on the same address and configuration, after
// Stop or Kill.
func (f *FPM) Start(t testing.TB) {
	t.Helper()
	from := fileSize(f.LogPath)
	if err := f.start(); err != nil {
		t.Fatalf("%v\nphp-fpm log:\n%s\nphp-fpm output:\n%s", err, readFrom(f.LogPath, from), tail(f.outPath, 4096))
	}
}

func (f *FPM) start() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.proc != nil {
		return errors.New("testenv: php-fpm is running")
	}
	args := []string{"--nodaemonize", "--fpm-config", f.ConfPath, "-c", f.INIPath}
	if isRoot() {
		args = append(args, "--allow-to-run-as-root")
	}
	from := fileSize(f.LogPath)
	// An empty PHP_INI_SCAN_DIR stops php from reading the distribution's
	// conf.d; the generated php.ini loads what the tests need.
	p, err := startProcess(f.bin, args, childEnv("PHP_INI_SCAN_DIR="), filepath.Dir(f.ConfPath), f.outPath)
	if err != nil {
		return err
	}
	if err := p.waitReady(func() (bool, error) { return logReady(f.LogPath, from), nil }); err != nil {
		p.stop(syscall.SIGTERM, stopGrace)
		return fmt.Errorf("testenv: php-fpm on %s: %w", f.Addr, err)
	}
	f.proc = p
	return nil
}

// logReady reports whether php-fpm has logged, after offset from, that it
// serves requests. It logs that after its workers have been forked; the
// listening socket is open before that.
func logReady(path string, from int64) bool {
	return bytes.Contains(readFrom(path, from), []byte("ready to handle connections"))
}

// Stop stops php-fpm (SIGTERM: workers are terminated, in-flight requests
// fail) and waits for the master and every worker to exit. It does nothing
// if php-fpm is not running.
func (f *FPM) Stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.proc != nil {
		f.proc.stop(syscall.SIGTERM, stopGrace)
		f.proc = nil
	}
}

// Kill kills the master and every worker with SIGKILL at once, as a crash
// would, and waits for them. Connections are reset; the listening socket
// goes away. It does nothing if php-fpm is not running.
func (f *FPM) Kill() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.proc != nil {
		f.proc.kill()
		f.proc = nil
	}
}

// Reload sends SIGUSR2, on which php-fpm re-reads its configuration and
// replaces every worker (in-flight requests are cut off), and waits until it
// serves again.
func (f *FPM) Reload(t testing.TB) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.proc == nil {
		t.Fatal("testenv: reload: php-fpm is not running")
	}
	from := fileSize(f.LogPath)
	if err := f.proc.signal(syscall.SIGUSR2); err != nil {
		t.Fatalf("testenv: reload php-fpm: %v", err)
	}
	if err := f.proc.waitReady(func() (bool, error) { return logReady(f.LogPath, from), nil }); err != nil {
		t.Fatalf("testenv: reload php-fpm: %v\nphp-fpm log:\n%s", err, readFrom(f.LogPath, from))
	}
}

// PID returns the master's process id, or 0 if php-fpm is not running.
func (f *FPM) PID() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.proc == nil {
		return 0
	}
	return f.proc.pid()
}

// Workers returns the process ids of the pool's workers (Linux only).
func (f *FPM) Workers() []int {
	pid := f.PID()
	if pid == 0 {
		return nil
	}
	return childrenOf(pid)
}

// Dial opens a connection to the pool.
func (f *FPM) Dial() (net.Conn, error) {
	network, address := splitAddr(f.Addr)
	return net.DialTimeout(network, address, 5*time.Second)
}

// Log returns php-fpm's error log so far.
func (f *FPM) Log() string {
	b, _ := os.ReadFile(f.LogPath)
	return string(b)
}

// fpmConf renders php-fpm.conf for one pool named www.
func fpmConf(o *FPMOptions, f *FPM) []byte {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	dir := filepath.Dir(f.ConfPath)
	w("; Generated by internal/testenv.")
	w("[global]")
	w("pid = %s", filepath.Join(dir, "php-fpm.pid"))
	w("error_log = %s", f.LogPath)
	w("log_level = notice")
	w("log_limit = 8192")
	w("daemonize = no")
	// Bounds graceful stops and reloads.
	w("process_control_timeout = 5s")
	w("")
	w("[www]")
	if isRoot() {
		w("user = root")
		w("group = root")
	}
	network, address := splitAddr(f.Addr)
	w("listen = %s", address)
	if network == "unix" {
		w("listen.mode = 0666")
	}
	w("pm = static")
	w("pm.max_children = %d", o.children())
	w("pm.max_requests = %d", max(o.MaxRequests, 0))
	w("pm.status_path = /fpm-status")
	w("ping.path = /fpm-ping")
	w("catch_workers_output = yes")
	w("decorate_workers_output = no")
	w("clear_env = no")
	if o.RequestTerminateTimeout > 0 {
		w("request_terminate_timeout = %ds", seconds(o.RequestTerminateTimeout))
	}
	if o.SlowlogTimeout > 0 {
		w("request_slowlog_timeout = %ds", seconds(o.SlowlogTimeout))
		w("slowlog = %s", f.SlowlogPath)
	}
	for _, k := range slices.Sorted(maps.Keys(o.AdminINI)) {
		w("php_admin_value[%s] = %s", k, o.AdminINI[k])
	}
	if o.Pool != "" {
		w("%s", o.Pool)
	}
	return []byte(b.String())
}

// seconds rounds d up to whole seconds.
func seconds(d time.Duration) int64 { return int64((d + time.Second - 1) / time.Second) }

// phpINI renders the php.ini: production-like error handling, limits large
// enough for upload tests, opcache if asked, then o.INI. The realpath cache
// keeps PHP's defaults.
func phpINI(o *FPMOptions, opcacheExt, tmp string) []byte {
	settings := map[string]string{
		"display_errors":         "Off",
		"display_startup_errors": "Off",
		"log_errors":             "On",
		"error_reporting":        "E_ALL",
		"html_errors":            "Off",
		"expose_php":             "Off",
		"output_buffering":       "4096",
		"memory_limit":           "128M",
		"max_execution_time":     "30",
		"post_max_size":          "256M",
		"upload_max_filesize":    "256M",
		"variables_order":        `"GPCS"`,
		"request_order":          `"GP"`,
		"date.timezone":          "UTC",
		"zend.assertions":        "-1",
		"sys_temp_dir":           `"` + tmp + `"`,
		"upload_tmp_dir":         `"` + tmp + `"`,
		"session.save_path":      `"` + tmp + `"`,
	}
	if o.Opcache {
		// The defaults of php.ini-production and of opcache itself.
		maps.Copy(settings, map[string]string{
			"opcache.enable":                  "1",
			"opcache.enable_cli":              "0",
			"opcache.memory_consumption":      "128",
			"opcache.interned_strings_buffer": "8",
			"opcache.max_accelerated_files":   "10000",
			"opcache.validate_timestamps":     "1",
			"opcache.revalidate_freq":         "2",
			"opcache.revalidate_path":         "0",
			"opcache.use_cwd":                 "1",
		})
	}
	maps.Copy(settings, o.INI)

	var b strings.Builder
	b.WriteString("; Generated by internal/testenv.\n")
	if opcacheExt != "" {
		fmt.Fprintf(&b, "zend_extension = %s\n", opcacheExt)
	}
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		fmt.Fprintf(&b, "%s = %s\n", k, settings[k])
	}
	return []byte(b.String())
}

var opcacheCache sync.Map // binary path -> opcacheResult

type opcacheResult struct {
	directive string
	err       error
}

// opcacheDirective returns what php.ini needs to load opcache into bin: ""
// if it is built in, "opcache.so" if it loads as a shared extension from the
// default extension_dir, as on Debian. It fails if neither works.
func opcacheDirective(bin string) (string, error) {
	if r, ok := opcacheCache.Load(bin); ok {
		r := r.(opcacheResult)
		return r.directive, r.err
	}
	r := opcacheResult{err: fmt.Errorf("testenv: %s cannot load opcache; install the Debian package php-opcache", bin)}
	for _, directive := range []string{"", "opcache.so"} {
		args := []string{"-n", "-m"}
		if directive != "" {
			args = []string{"-n", "-d", "zend_extension=" + directive, "-m"}
		}
		cmd := exec.Command(bin, args...)
		cmd.Env = childEnv("PHP_INI_SCAN_DIR=")
		out, err := cmd.Output()
		if err == nil && bytes.Contains(out, []byte("Zend OPcache")) {
			r = opcacheResult{directive: directive}
			break
		}
	}
	opcacheCache.Store(bin, r)
	return r.directive, r.err
}
