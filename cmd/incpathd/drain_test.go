package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/control"
	"github.com/incpathd/incpathd/internal/testenv"
)

// runDrain runs `incpathd drain args...` in this process.
func runDrain(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), append([]string{"drain"}, args...), func(string) string { return "" }, &out, &errb, nil)
	return code, out.String(), errb.String()
}

// controlStatus reads the control endpoint, failing the test on error.
func controlStatus(t *testing.T, addr string) *control.Status {
	t.Helper()
	c := &control.Client{Addr: addr}
	defer c.Close()
	st, err := c.Status(context.Background())
	require.NoError(t, err)
	return st
}

func TestParseReleasesFlags(t *testing.T) {
	c, err := parse(nil, func(string) string { return "" }, &bytes.Buffer{})
	require.NoError(t, err)
	assert.True(t, c.watch, "watching is on by default")
	assert.Empty(t, c.control, "the control endpoint is off by default")
	assert.Equal(t, "0600", c.controlMode)

	c, err = parse([]string{"--watch=false", "--control", "127.0.0.1:9002"},
		func(k string) string { return map[string]string{"INCPATHD_CONTROL_MODE": "0660"}[k] }, &bytes.Buffer{})
	require.NoError(t, err)
	assert.False(t, c.watch)
	assert.Equal(t, "127.0.0.1:9002", c.control)
	assert.Equal(t, "0660", c.controlMode)

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--control", "0.0.0.0:9002"}, "--control-allow-remote"},
		{[]string{"--control", "192.0.2.1:9002"}, "not a loopback address"},
		{[]string{"--control", "unix:relative.sock"}, "absolute"},
		{[]string{"--control-mode", "rw"}, "--control-mode"},
	} {
		_, err := parse(tc.args, func(string) string { return "" }, &bytes.Buffer{})
		if assert.Error(t, err, "%v", tc.args) {
			assert.Contains(t, err.Error(), tc.want)
		}
	}
	_, err = parse([]string{"--control", "192.0.2.1:9002", "--control-allow-remote"}, func(string) string { return "" }, &bytes.Buffer{})
	assert.NoError(t, err, "allowed explicitly")
}

func TestDrainUsage(t *testing.T) {
	code, _, errb := runDrain(t)
	assert.Equal(t, 2, code)
	assert.Contains(t, errb, "name one release")

	code, _, errb = runDrain(t, "/srv/site/releases/A")
	assert.Equal(t, 2, code)
	assert.Contains(t, errb, "INCPATHD_CONTROL")

	code, _, errb = runDrain(t, "/srv/site/releases/A", "--control", "unix:/x", "--timeout", "0s")
	assert.Equal(t, 2, code)
	assert.Contains(t, errb, "positive")

	// INCPATHD_CONTROL is read, as the daemon reads it; nobody listens.
	var out, errbuf bytes.Buffer
	sock := testenv.FreeSocket(t, "none.sock")
	code = run(context.Background(), []string{"drain", "/srv/site/releases/A", "--timeout", "300ms"},
		func(k string) string { return map[string]string{"INCPATHD_CONTROL": sock}[k] }, &out, &errbuf, nil)
	assert.Equal(t, 1, code, "an unreachable daemon is not a drained release")
	assert.Contains(t, errbuf.String(), "timed out after 300ms")
	assert.Contains(t, errbuf.String(), "cannot read incpathd's control endpoint")
}

// A slow request pinned to A through real nginx keeps `drain A` waiting
// until it ends; `drain` of the active release times out and says why.
func TestE2EDrain(t *testing.T) {
	ctl := testenv.FreeSocket(t, "control.sock")
	s := startStack(t, stackOptions{
		args:  []string{"--control", ctl},
		nginx: testenv.NginxOptions{KeepConn: true},
	})
	a, b := s.site.Releases["A"], s.site.Releases["B"]

	fi, err := os.Stat(strings.TrimPrefix(ctl, "unix:"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "the control socket is private by default")

	// Nothing in flight yet, but A is the target of current.
	code, _, errb := runDrain(t, a, "--control", ctl, "--timeout", "300ms")
	assert.Equal(t, 1, code)
	assert.Contains(t, errb, "timed out after 300ms")
	assert.Contains(t, errb, s.site.Current+" points at it")

	type result struct {
		code int
		body string
		end  time.Time
	}
	slow := make(chan result, 1)
	start := time.Now()
	go func() {
		resp, err := s.nginx.Client().Get(s.nginx.URL + "/slow.php?ms=3000")
		if err != nil {
			slow <- result{body: err.Error(), end: time.Now()}
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		slow <- result{resp.StatusCode, string(body), time.Now()}
	}()
	require.Eventually(t, func() bool {
		st := controlStatus(t, ctl)
		return len(st.Releases) == 1 && st.Releases[0].Path == a && st.Releases[0].InFlight == 1
	}, 10*time.Second, 10*time.Millisecond, "the slow request shows as in flight on A")

	require.NoError(t, s.site.Flip("B"))
	require.Eventually(t, func() bool {
		for _, l := range controlStatus(t, ctl).Links {
			if l.Docroot == s.site.Current {
				return l.Target == b && l.Cached != a
			}
		}
		return false
	}, 5*time.Second, 10*time.Millisecond, "the flip is seen")
	assert.Equal(t, "B\n", s.body(t, "/slow.php"), "new requests go to B")

	// A is no longer a target, but the slow request still uses it: a
	// drain with a short timeout fails and names it. The release is given
	// through another symlink to it; drain compares resolved paths.
	previous := filepath.Join(s.site.Root, "previous")
	require.NoError(t, os.Symlink(a, previous))
	code, _, errb = runDrain(t, previous, "--control", ctl, "--timeout", "300ms")
	assert.Equal(t, 1, code)
	assert.Contains(t, errb, "1 request in flight on "+a)
	assert.NotContains(t, errb, "points at it")

	// Without a short timeout, drain waits for the request to end.
	code, out, errb := runDrain(t, a, "--control", ctl, "--timeout", "20s")
	drained := time.Now()
	assert.Equal(t, 0, code, errb)
	assert.Contains(t, out, a+" is drained")
	assert.Contains(t, errb, "waiting for "+a+": 1 request in flight")
	r := <-slow
	assert.Equal(t, 200, r.code, r.body)
	assert.Equal(t, "A\n", r.body, "the slow request ran in A to the end")
	assert.GreaterOrEqual(t, drained.Sub(start), 3*time.Second, "drain returned before the slow request could have ended")

	// The active release never drains.
	code, _, errb = runDrain(t, b, "--control", ctl, "--timeout", "500ms")
	assert.Equal(t, 1, code)
	assert.Contains(t, errb, "timed out after 500ms: "+b+" is still in use: "+s.site.Current+" points at it")
}

// With watching, requests in the steady state cost no path system call,
// however short --realpath-every is; a flip is still seen.
func TestE2EWatchNoResolutions(t *testing.T) {
	ctl := testenv.FreeSocket(t, "control.sock")
	s := startStack(t, stackOptions{
		args:  []string{"--control", ctl, "--realpath-every", "1ms"},
		nginx: testenv.NginxOptions{KeepConn: true},
	})
	assertPinned(t, s.site, s.index(t, "/index.php"), "A")
	before := controlStatus(t, ctl).Resolver
	require.True(t, before.Watching)
	require.EqualValues(t, 1, before.Resolutions)
	const n = 50
	for range n {
		assertPinned(t, s.site, s.index(t, "/index.php"), "A")
		time.Sleep(2 * time.Millisecond) // past --realpath-every each time
	}
	after := controlStatus(t, ctl).Resolver
	assert.EqualValues(t, 1, after.Resolutions, "no resolution for %d requests", n)
	assert.EqualValues(t, before.Hits+n, after.Hits)

	require.NoError(t, s.site.Flip("B"))
	require.Eventually(t, func() bool { return controlStatus(t, ctl).Resolver.WatchForgets > 0 },
		5*time.Second, time.Millisecond)
	assertPinned(t, s.site, s.index(t, "/index.php"), "B")
	assert.EqualValues(t, 2, controlStatus(t, ctl).Resolver.Resolutions)
}

// body GETs path and returns the body of a 200 answer.
func (s *stack) body(t *testing.T, path string) string {
	t.Helper()
	code, body := s.nginx.Get(t, path)
	require.Equal(t, 200, code, "GET %s: %s", path, body)
	return body
}
