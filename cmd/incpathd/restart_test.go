//go:build linux

package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/internal/testenv"
)

// family is an incpathd started as a real process, and the processes that
// replace it on SIGHUP. All of them share one process group, which is
// killed and reaped when the test ends; the test process is the subreaper
// (testenv made it one), so every later generation becomes its child once
// its predecessor exits.
type family struct {
	t         *testing.T
	pidFile   string
	logPath   string
	first     *exec.Cmd
	firstDone chan struct{} // closed when the first process has been reaped
	firstErr  error
}

// startFamily runs cmd in its own process group, with its output in a file
// (a pipe would keep the first process's Wait waiting for every successor).
func startFamily(t *testing.T, cmd *exec.Cmd, pidFile string) *family {
	t.Helper()
	// The subreaper of every later generation, whether or not testenv
	// started a server (which makes it one) before (PR_SET_CHILD_SUBREAPER).
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, 36, 1, 0)
	f := &family{t: t, pidFile: pidFile, logPath: filepath.Join(t.TempDir(), "incpathd.log"), first: cmd, firstDone: make(chan struct{})}
	out, err := os.Create(f.logPath)
	require.NoError(t, err)
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	go func() { f.firstErr = cmd.Wait(); close(f.firstDone) }()
	t.Cleanup(func() {
		pgid := cmd.Process.Pid
		syscall.Kill(-pgid, syscall.SIGKILL)
		select {
		case <-f.firstDone:
		case <-time.After(10 * time.Second):
		}
		for {
			if _, err := syscall.Wait4(-pgid, nil, 0, nil); err != nil && err != syscall.EINTR {
				break
			}
		}
		if t.Failed() {
			t.Logf("incpathd log:\n%s", f.log())
		}
	})
	return f
}

func (f *family) log() string {
	b, _ := os.ReadFile(f.logPath)
	return string(b)
}

// pid is the pid in the pid file, 0 if there is none yet.
func (f *family) pid() int {
	b, _ := os.ReadFile(f.pidFile)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// waitPID waits for the pid file to name a process other than old.
func (f *family) waitPID(old int) int {
	f.t.Helper()
	var pid int
	require.Eventually(f.t, func() bool { pid = f.pid(); return pid != 0 && pid != old },
		30*time.Second, 5*time.Millisecond, "no new pid in %s; log:\n%s", f.pidFile, f.log())
	return pid
}

// waitExit waits for process pid of the family to exit and reaps it; it
// must have exited cleanly.
func (f *family) waitExit(pid int) {
	f.t.Helper()
	done := make(chan error, 1)
	if pid == f.first.Process.Pid {
		go func() { <-f.firstDone; done <- f.firstErr }()
	} else {
		go func() {
			var ws syscall.WaitStatus
			for {
				_, err := syscall.Wait4(pid, &ws, 0, nil)
				if err == syscall.EINTR {
					continue
				}
				if err == nil && ws.ExitStatus() != 0 {
					err = fmt.Errorf("exit status %d", ws.ExitStatus())
				}
				done <- err
				return
			}
		}()
	}
	select {
	case err := <-done:
		require.NoError(f.t, err, "process %d; log:\n%s", pid, f.log())
	case <-time.After(60 * time.Second):
		f.t.Fatalf("process %d did not exit; log:\n%s", pid, f.log())
	}
}

// buildIncpathd builds the command with main.version set.
func buildIncpathd(t *testing.T, out, ver string) {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goBin, "build", "-o", out, "-ldflags", "-X main.version="+ver, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "go build: %s", b)
}

// copyExecutable puts src at dst by writing a temporary file and renaming
// it: a running process keeps the file it was started from.
func copyExecutable(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(dst+".new", b, 0o755))
	require.NoError(t, os.Rename(dst+".new", dst))
}

// notifications collects what incpathd sends to NOTIFY_SOCKET.
type notifications struct {
	mu   sync.Mutex
	msgs []string
	c    *net.UnixConn
	done chan struct{}
}

func listenNotify(t *testing.T) (*notifications, string) {
	t.Helper()
	path := strings.TrimPrefix(testenv.FreeSocket(t, "notify.sock"), "unix:")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	require.NoError(t, err)
	n := &notifications{c: c, done: make(chan struct{})}
	go func() {
		defer close(n.done)
		buf := make([]byte, 4096)
		for {
			k, err := c.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, string(buf[:k]))
			n.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.Close(); <-n.done })
	return n, path
}

func (n *notifications) has(msg string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, m := range n.msgs {
		if m == msg {
			return true
		}
	}
	return false
}

// metricsVersion reads the version label of incpathd_build_info.
func metricsVersion(t *testing.T, addr string) string {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "incpathd_build_info{") {
			_, rest, _ := strings.Cut(line, `,version="`)
			v, _, _ := strings.Cut(rest, `"`)
			return v
		}
	}
	t.Fatalf("no incpathd_build_info in /metrics")
	return ""
}

// load runs a few clients against url until stop is closed, and counts.
type load struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string
	wg         sync.WaitGroup
	stop       chan struct{}
}

func startLoad(t *testing.T, client *http.Client, urls []string, clients int) *load {
	l := &load{stop: make(chan struct{})}
	deadline := time.Now().Add(3 * time.Minute) // bounded whatever happens
	for i := range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for n := 0; time.Now().Before(deadline); n++ {
				select {
				case <-l.stop:
					return
				default:
				}
				url := urls[(i+n)%len(urls)]
				resp, err := client.Get(url)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					l.errs = append(l.errs, fmt.Sprintf("%s %s: %v", time.Now().Format("15:04:05.000"), url, err))
					l.mu.Unlock()
					continue
				}
				l.ok.Add(1)
			}
		}()
	}
	t.Cleanup(l.end)
	return l
}

func (l *load) end() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// Five SIGHUP restarts under steady load through real nginx, alternating
// two builds of incpathd swapped in place: not one request fails.
func TestRestartUnderLoad(t *testing.T) {
	site := testenv.NewSite(t, "A", "B")
	fpm := testenv.StartFPM(t, testenv.FPMOptions{Children: 4})
	dir := t.TempDir()
	builds := [2]string{filepath.Join(dir, "v1", "incpathd"), filepath.Join(dir, "v2", "incpathd")}
	buildIncpathd(t, builds[0], "restart-v1")
	buildIncpathd(t, builds[1], "restart-v2")
	exe := filepath.Join(dir, "run", "incpathd")
	require.NoError(t, os.MkdirAll(filepath.Dir(exe), 0o755))
	copyExecutable(t, builds[0], exe)

	notify, notifySock := listenNotify(t)
	listen, maddr := testenv.FreeAddr(t), testenv.FreeAddr(t)
	pidFile := filepath.Join(dir, "incpathd.pid")
	cmd := exec.Command(exe, "--listen", listen, "--upstream", fpm.Addr,
		// Two processes overlap during a restart: 2 connections each stay
		// within the pool's 4 workers.
		"--max-conns", "2", "--pid-file", pidFile, "--metrics", maddr, "--shutdown-timeout", "20s",
		"--search-replace-pattern", site.Current, "--include-path", ".:"+site.Current+"/include")
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notifySock)
	fam := startFamily(t, cmd, pidFile)
	pid := fam.waitPID(0)
	assert.Equal(t, cmd.Process.Pid, pid)
	assert.Equal(t, "restart-v1", metricsVersion(t, maddr))
	nginx := testenv.StartNginx(t, testenv.NginxOptions{Root: site.Current, FastCGIPass: listen, KeepConn: true})

	ld := startLoad(t, nginx.Client(), []string{nginx.URL + "/index.php", nginx.URL + "/slow.php?ms=30"}, 3)
	time.Sleep(300 * time.Millisecond)
	want := ""
	for i := 1; i <= 5; i++ {
		b := builds[i%2]
		want = fmt.Sprintf("restart-v%d", i%2+1)
		copyExecutable(t, b, exe)
		old := pid
		served := ld.ok.Load()
		require.NoError(t, syscall.Kill(old, syscall.SIGHUP))
		pid = fam.waitPID(old)
		fam.waitExit(old)
		assert.Equal(t, want, metricsVersion(t, maddr), "restart %d", i)
		// Some load on the new process before the next restart.
		require.Eventually(t, func() bool { return ld.ok.Load() > served+20 }, 30*time.Second, 5*time.Millisecond,
			"the load stalled after restart %d", i)
	}
	ld.end()
	t.Logf("requests served through 5 restarts: %d ok, %d failed", ld.ok.Load(), ld.failed.Load())
	assert.Zero(t, ld.failed.Load(), "failed requests:\n%s", strings.Join(ld.errs, "\n"))
	assert.Greater(t, ld.ok.Load(), int64(100))
	if log := strings.TrimSpace(nginx.Log()); log != "" {
		t.Logf("nginx error log (requests it retried on a new connection still succeeded):\n%s", log)
	}

	// The process serving now runs the last build swapped in.
	out, err := exec.Command(fmt.Sprintf("/proc/%d/exe", pid), "--version").Output()
	require.NoError(t, err)
	assert.Equal(t, "incpathd "+want+"\n", string(out))
	assert.NotEqual(t, "incpathd restart-v1\n", string(out))
	for _, p := range []int{cmd.Process.Pid, pid} {
		assert.True(t, notify.has("READY=1\nMAINPID="+strconv.Itoa(p)), "no readiness from %d to systemd", p)
	}
	assert.True(t, notify.has("RELOADING=1"))

	// SIGTERM still drains and exits, and the pid file goes with the process.
	require.NoError(t, syscall.Kill(pid, syscall.SIGTERM))
	fam.waitExit(pid)
	assert.NoFileExists(t, pidFile)
}

// A build that cannot start does not take the old process down: the
// restart fails, and the old one keeps serving.
func TestRestartFailureKeepsServing(t *testing.T) {
	fpm := testenv.StartFPM(t, testenv.FPMOptions{})
	dir := t.TempDir()
	exe := filepath.Join(dir, "incpathd")
	copyExecutable(t, os.Args[0], exe)
	listen := testenv.FreeAddr(t)
	pidFile := filepath.Join(dir, "incpathd.pid")
	cmd := exec.Command(exe, "--listen", listen, "--upstream", fpm.Addr, "--pid-file", pidFile)
	cmd.Env = append(os.Environ(), "INCPATHD_TEST_MAIN=1")
	fam := startFamily(t, cmd, pidFile)
	pid := fam.waitPID(0)

	require.NoError(t, os.WriteFile(exe+".new", []byte("#!/bin/sh\nexit 3\n"), 0o755))
	require.NoError(t, os.Rename(exe+".new", exe))
	require.NoError(t, syscall.Kill(pid, syscall.SIGHUP))
	require.Eventually(t, func() bool { return strings.Contains(fam.log(), "restart failed") }, 30*time.Second, 10*time.Millisecond)
	assert.Equal(t, pid, fam.pid())
	c, err := net.Dial("tcp", listen)
	require.NoError(t, err, "the old process still accepts")
	c.Close()
	require.NoError(t, syscall.Kill(pid, syscall.SIGTERM))
	fam.waitExit(pid)
}

// systemd socket activation: the socket comes in as descriptor 3 with
// LISTEN_FDS=1, and LISTEN_PID must be the pid of incpathd itself. A shell
// sets LISTEN_PID=$$ and then execs incpathd, which keeps the shell's pid,
// as systemd does with the forked child before its exec. A SIGHUP restart
// hands the same socket on.
func TestSystemdSocketActivation(t *testing.T) {
	site := testenv.NewSite(t, "A", "B")
	fpm := testenv.StartFPM(t, testenv.FPMOptions{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	lf, err := l.(*net.TCPListener).File()
	require.NoError(t, err)
	addr := l.Addr().String()
	dir := t.TempDir()
	exe := filepath.Join(dir, "incpathd")
	copyExecutable(t, os.Args[0], exe)
	pidFile := filepath.Join(dir, "incpathd.pid")
	unused := testenv.FreeAddr(t)
	cmd := exec.Command("/bin/sh", "-c", `export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=incpathd.socket; exec "$0" "$@"`,
		exe, "--listen", unused, "--upstream", fpm.Addr, "--pid-file", pidFile)
	cmd.Env = append(os.Environ(), "INCPATHD_TEST_MAIN=1")
	cmd.ExtraFiles = []*os.File{lf}
	fam := startFamily(t, cmd, pidFile)
	// Only incpathd holds the socket now, as only systemd and the service
	// would.
	lf.Close()
	l.Close()
	pid := fam.waitPID(0)
	assert.Equal(t, cmd.Process.Pid, pid, "the shell exec'd incpathd in place")
	assert.Contains(t, fam.log(), "using sockets from systemd")
	_, err = net.DialTimeout("tcp", unused, time.Second)
	assert.Error(t, err, "--listen is ignored under socket activation")

	nginx := testenv.StartNginx(t, testenv.NginxOptions{Root: site.Current, FastCGIPass: addr, KeepConn: true})
	code, body := nginx.Get(t, "/slow.php")
	require.Equal(t, 200, code, body)
	assert.Equal(t, "A\n", body)

	require.NoError(t, syscall.Kill(pid, syscall.SIGHUP))
	next := fam.waitPID(pid)
	fam.waitExit(pid)
	code, body = nginx.Get(t, "/slow.php")
	assert.Equal(t, 200, code, body)
	assert.NotContains(t, environOf(t, next), "LISTEN_FDS=", "the successor was not told about systemd's descriptors")

	require.NoError(t, syscall.Kill(next, syscall.SIGTERM))
	fam.waitExit(next)
}

// environOf returns a process's environment as it was at exec.
func environOf(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	require.NoError(t, err)
	return string(bytes.ReplaceAll(b, []byte{0}, []byte{'\n'}))
}
