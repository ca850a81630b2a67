package maintenance

import (
	"bufio"
	"bytes"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/internal/testsupport"
)

// app counts the requests that get through and answers "from php".
type app struct{ n atomic.Int32 }

func (a *app) ServeFCGI(w *fcgi.ResponseWriter, r *fcgi.Request) {
	a.n.Add(1)
	for !r.Body.Done() {
		if _, err := r.Body.Next(); err != nil {
			break
		}
	}
	w.Write([]byte("Content-Type: text/plain\r\n\r\nfrom php"))
}

// start serves m on loopback and returns a client.
func start(t *testing.T, m *Mode) *client {
	t.Helper()
	require.NoError(t, m.Start())
	t.Cleanup(func() { m.Close() })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &fcgi.Server{Handler: m}
	done := make(chan struct{})
	go func() { srv.Serve(l); close(done) }()
	t.Cleanup(func() { srv.Close(); <-done })
	c, err := net.Dial("tcp", l.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	bw := bufio.NewWriter(c)
	return &client{c: c, r: fcgi.NewReader(c), bw: bw, w: fcgi.NewWriter(bw)}
}

type client struct {
	c  net.Conn
	r  *fcgi.Reader
	bw *bufio.Writer
	w  *fcgi.Writer
}

// do sends a request from remote with body on the kept connection and
// returns the STDOUT.
func (c *client) do(t *testing.T, remote string, body []byte) string {
	t.Helper()
	c.c.SetDeadline(time.Now().Add(5 * time.Second))
	c.w.WriteBeginRequest(1, fcgi.RoleResponder, fcgi.FlagKeepConn)
	require.NoError(t, c.w.WriteParams(1, []fcgi.Pair{
		{Name: "REQUEST_METHOD", Value: "GET"},
		{Name: "REQUEST_URI", Value: "/index.php"},
		{Name: "REMOTE_ADDR", Value: remote},
	}))
	if len(body) > 0 {
		c.w.WriteRecord(fcgi.TypeStdin, 1, body)
	}
	c.w.WriteRecord(fcgi.TypeStdin, 1, nil)
	require.NoError(t, c.w.Flush())
	var out strings.Builder
	for {
		h, content, err := c.r.Next()
		require.NoError(t, err)
		switch h.Type {
		case fcgi.TypeStdout:
			out.Write(content)
		case fcgi.TypeEndRequest:
			return out.String()
		}
	}
}

func touch(t *testing.T, path string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, nil, 0o644))
}

func waitFor(t *testing.T, m *Mode, on bool) {
	t.Helper()
	require.Eventually(t, func() bool { return m.On() == on }, 5*time.Second, time.Millisecond, "maintenance mode never turned %v", on)
}

func TestOnOff(t *testing.T) {
	dir := t.TempDir()
	a := &app{}
	var logs testsupport.LogBuffer
	m := &Mode{File: filepath.Join(dir, "maintenance"), Next: a, RetryAfter: 90 * time.Second,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	c := start(t, m)
	assert.False(t, m.Polling(), "the directory is watched")

	assert.Contains(t, c.do(t, "192.0.2.1", nil), "from php")
	assert.Equal(t, int32(1), a.n.Load())

	touch(t, m.File)
	waitFor(t, m, true)
	out := c.do(t, "192.0.2.1", nil)
	assert.True(t, strings.HasPrefix(out, "Status: 503 Service Unavailable\r\n"), "%q", out)
	assert.Contains(t, out, "\r\nRetry-After: 90\r\n")
	assert.Contains(t, out, "\r\nX-Maintenance-Mode: 1\r\n")
	assert.Contains(t, out, "\r\nContent-Type: text/plain; charset=utf-8\r\n")
	assert.True(t, strings.HasSuffix(out, "\r\n\r\n"+DefaultPage), "%q", out)
	// A body is read away: the kept connection carries the next request.
	out = c.do(t, "192.0.2.1", bytes.Repeat([]byte("x"), 100<<10))
	assert.Contains(t, out, "Status: 503")
	assert.Equal(t, int32(1), a.n.Load(), "nothing reached the application")
	assert.Equal(t, uint64(2), m.Answered())

	require.NoError(t, os.Remove(m.File))
	waitFor(t, m, false)
	assert.Contains(t, c.do(t, "192.0.2.1", nil), "from php")
	assert.Equal(t, int32(2), a.n.Load())
	assert.Contains(t, logs.String(), "maintenance mode on")
	// The state flips before its log line is written.
	assert.Eventually(t, func() bool { return strings.Contains(logs.String(), "maintenance mode off") },
		5*time.Second, time.Millisecond, "%s", logs.String())

	// Renamed into place, as deploy tools write files.
	touch(t, m.File+".tmp")
	require.NoError(t, os.Rename(m.File+".tmp", m.File))
	waitFor(t, m, true)
}

func TestOnAtStartAndAllow(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "maintenance")
	touch(t, file)
	allow, err := ParseAllow([]string{"127.0.0.1", "2001:db8::/32"})
	require.NoError(t, err)
	a := &app{}
	m := &Mode{File: file, Next: a, Allow: allow}
	c := start(t, m)
	assert.True(t, m.On(), "on from the start")
	assert.Contains(t, c.do(t, "127.0.0.1", nil), "from php", "allow-listed")
	assert.Contains(t, c.do(t, "::ffff:127.0.0.1", nil), "from php", "IPv4-mapped")
	assert.Contains(t, c.do(t, "2001:db8::7", nil), "from php")
	assert.Contains(t, c.do(t, "127.0.0.2", nil), "Status: 503")
	assert.Contains(t, c.do(t, "", nil), "Status: 503", "no REMOTE_ADDR")
	assert.Contains(t, c.do(t, "2001:db9::1", nil), "Status: 503")
	assert.Equal(t, int32(3), a.n.Load())
	assert.Contains(t, c.do(t, "127.0.0.2", nil), "Retry-After: 60\r\n", "the default")
}

func TestCustomPage(t *testing.T) {
	dir := t.TempDir()
	page := filepath.Join(dir, "maintenance.html")
	require.NoError(t, os.WriteFile(page, []byte("<h1>Back soon</h1>"), 0o644))
	m := &Mode{File: filepath.Join(dir, "maintenance"), Page: page, Next: &app{}}
	c := start(t, m)
	touch(t, m.File)
	waitFor(t, m, true)
	out := c.do(t, "192.0.2.1", nil)
	assert.Contains(t, out, "Content-Type: text/html; charset=utf-8\r\n")
	assert.True(t, strings.HasSuffix(out, "\r\n\r\n<h1>Back soon</h1>"), "%q", out)

	// Edited while on: the next answers carry the new page.
	require.NoError(t, os.WriteFile(page, []byte("<h1>Nearly there</h1>"), 0o644))
	require.Eventually(t, func() bool { return strings.HasSuffix(c.do(t, "192.0.2.1", nil), "Nearly there</h1>") },
		5*time.Second, 5*time.Millisecond)

	// A page that cannot be read: the built-in one, not an error.
	require.NoError(t, os.Remove(page))
	require.NoError(t, os.Remove(m.File))
	waitFor(t, m, false)
	touch(t, m.File)
	waitFor(t, m, true)
	assert.True(t, strings.HasSuffix(c.do(t, "192.0.2.1", nil), DefaultPage))
}

// A directory that cannot be watched (it does not exist yet): the file is
// polled, and that is logged.
func TestPollFallback(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "later")
	var logs testsupport.LogBuffer
	m := &Mode{File: filepath.Join(dir, "maintenance"), Next: &app{}, PollEvery: 10 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	start(t, m)
	assert.True(t, m.Polling())
	assert.Contains(t, logs.String(), "cannot watch")
	require.NoError(t, os.Mkdir(dir, 0o755))
	touch(t, m.File)
	waitFor(t, m, true)
	require.NoError(t, os.Remove(m.File))
	waitFor(t, m, false)
}

// The watched directory removed and made again: the watch falls back to
// polling and still sees the file.
func TestWatchedDirectoryGoesAway(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "flags")
	require.NoError(t, os.Mkdir(dir, 0o755))
	var logs testsupport.LogBuffer
	m := &Mode{File: filepath.Join(dir, "maintenance"), Next: &app{}, PollEvery: 10 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	start(t, m)
	require.False(t, m.Polling())
	require.NoError(t, os.Remove(dir))
	require.Eventually(t, m.Polling, 5*time.Second, time.Millisecond)
	require.NoError(t, os.Mkdir(dir, 0o755))
	touch(t, m.File)
	waitFor(t, m, true)
}

func TestParseAllow(t *testing.T) {
	got, err := ParseAllow([]string{"10.1.2.3/8", "::1", "::ffff:192.0.2.1"})
	require.NoError(t, err)
	assert.Equal(t, []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("::1/128"),
		netip.MustParsePrefix("192.0.2.1/32"),
	}, got)
	_, err = ParseAllow([]string{"localhost"})
	assert.ErrorContains(t, err, `"localhost"`)
}

func TestStartNeedsFileAndNext(t *testing.T) {
	assert.Error(t, (&Mode{Next: &app{}}).Start())
	assert.Error(t, (&Mode{File: "/x"}).Start())
}
