//go:build linux

package main

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/internal/testenv"
	"github.com/incpathd/incpathd/internal/testsupport"
)

// daemonSockets are the three unix sockets a daemon can listen on.
type daemonSockets struct{ listen, control, metrics string }

func newDaemonSockets(t *testing.T) daemonSockets {
	dir := filepath.Dir(strings.TrimPrefix(testenv.FreeSocket(t, "x"), "unix:"))
	return daemonSockets{filepath.Join(dir, "fcgi.sock"), filepath.Join(dir, "control.sock"), filepath.Join(dir, "metrics.sock")}
}

func (s daemonSockets) args() []string {
	return []string{"--listen", "unix:" + s.listen, "--control", "unix:" + s.control, "--metrics", "unix:" + s.metrics}
}

func (s daemonSockets) all() []string { return []string{s.listen, s.control, s.metrics} }

// startDaemonProcess runs this test binary as incpathd, with restarts on
// SIGHUP as in production, and waits until it is ready.
func startDaemonProcess(t *testing.T, s daemonSockets, env ...string) (*family, int) {
	t.Helper()
	pidFile := filepath.Join(t.TempDir(), "incpathd.pid")
	args := append(s.args(), "--upstream", testenv.FreeAddr(t), "--pid-file", pidFile)
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), "INCPATHD_TEST_MAIN=1"), env...)
	fam := startFamily(t, cmd, pidFile)
	return fam, fam.waitPID(0)
}

// serving checks that a process answers on each socket: FastCGI accepts,
// the control endpoint and the metrics answer over HTTP.
func (s daemonSockets) serving(t *testing.T, when string) {
	t.Helper()
	c, err := net.DialTimeout("unix", s.listen, 5*time.Second)
	if assert.NoError(t, err, "%s: --listen", when) {
		c.Close()
	}
	for _, u := range []struct{ sock, path string }{{s.control, "/releases"}, {s.metrics, "/healthz"}} {
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", u.sock)
			},
		}}
		resp, err := client.Get("http://incpathd" + u.path)
		if assert.NoError(t, err, "%s: %s", when, u.sock) {
			resp.Body.Close()
			assert.Equal(t, 200, resp.StatusCode, "%s: %s", when, u.sock)
		}
	}
}

// Issue 10, item 11: every unix socket goes with the process on a clean
// exit, every time. The restart support unlinked them on a goroutine of its
// own, and the process often exited first: the sockets stayed in about
// half of the SIGTERM exits.
func TestUnixSocketsRemovedOnSIGTERM(t *testing.T) {
	const runs = 6
	left := 0
	for i := range runs {
		s := newDaemonSockets(t)
		fam, pid := startDaemonProcess(t, s)
		for path, mode := range map[string]os.FileMode{s.listen: 0o660, s.control: 0o600, s.metrics: 0o600} {
			fi, err := os.Lstat(path)
			require.NoError(t, err)
			assert.Equal(t, mode, fi.Mode().Perm(), "%s", path)
		}
		require.NoError(t, syscall.Kill(pid, syscall.SIGTERM))
		fam.waitExit(pid)
		for _, path := range s.all() {
			if _, err := os.Lstat(path); err == nil {
				t.Errorf("run %d: %s left behind after a clean exit", i, filepath.Base(path))
				left++
			}
		}
	}
	assert.Zero(t, left, "sockets left behind over %d runs", runs)
}

// Issue 10, item 11: a SIGHUP restart hands every socket, the control
// endpoint's included, to the new process, and the old one leaves them in
// place on its way out. A successor that fails after taking them over
// leaves them to the process still serving; the last one removes them.
func TestRestartKeepsUnixSockets(t *testing.T) {
	s := newDaemonSockets(t)
	marker := filepath.Join(t.TempDir(), "fail")
	fam, pid := startDaemonProcess(t, s, "INCPATHD_TEST_FAIL_IF="+marker)
	s.serving(t, "first process")
	before, err := os.Lstat(s.listen)
	require.NoError(t, err)

	require.NoError(t, syscall.Kill(pid, syscall.SIGHUP))
	next := fam.waitPID(pid)
	fam.waitExit(pid)
	for _, path := range s.all() {
		_, err := os.Lstat(path)
		assert.NoError(t, err, "%s removed by the process that handed it over", filepath.Base(path))
	}
	s.serving(t, "after the restart")
	after, err := os.Lstat(s.listen)
	require.NoError(t, err)
	assert.True(t, os.SameFile(before, after), "the socket was handed over, not made anew")

	// The next successor fails once it holds the sockets.
	require.NoError(t, os.WriteFile(marker, nil, 0o644))
	require.NoError(t, syscall.Kill(next, syscall.SIGHUP))
	require.Eventually(t, func() bool { return strings.Contains(fam.log(), "restart failed") }, 30*time.Second, 10*time.Millisecond)
	assert.Contains(t, fam.log(), "failing before ready")
	assert.Equal(t, next, fam.pid())
	for _, path := range s.all() {
		_, err := os.Lstat(path)
		assert.NoError(t, err, "%s removed by a successor that failed", filepath.Base(path))
	}
	s.serving(t, "after a failed restart")

	require.NoError(t, syscall.Kill(next, syscall.SIGTERM))
	fam.waitExit(next)
	for _, path := range s.all() {
		_, err := os.Lstat(path)
		assert.ErrorIs(t, err, os.ErrNotExist, "%s left behind by the last process", filepath.Base(path))
	}
}

// Issue 10, item 11: --listen unix:PATH over a file that is not a socket
// is refused, and the file stays; --control and --metrics likewise.
func TestUnixListenRefusesAFile(t *testing.T) {
	for _, flag := range []string{"--listen", "--control", "--metrics"} {
		t.Run(flag, func(t *testing.T) {
			s := newDaemonSockets(t)
			path := map[string]string{"--listen": s.listen, "--control": s.control, "--metrics": s.metrics}[flag]
			require.NoError(t, os.WriteFile(path, []byte("keep me"), 0o644))
			var errb testsupport.LogBuffer
			// Bounded: a daemon that took the path over would serve on.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			code := run(ctx, append(s.args(), "--upstream", testenv.FreeAddr(t)),
				func(string) string { return "" }, &errb, &errb, nil)
			assert.Equal(t, 1, code)
			assert.Contains(t, errb.String(), "not a socket")
			b, err := os.ReadFile(path)
			require.NoError(t, err)
			assert.Equal(t, "keep me", string(b))
			for _, other := range s.all() {
				if other != path {
					_, err := os.Lstat(other)
					assert.ErrorIs(t, err, os.ErrNotExist, "%s left behind by a start that failed", filepath.Base(other))
				}
			}
		})
	}
}
