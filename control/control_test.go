package control

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/inflight"
	"github.com/incpathd/incpathd/pin"
)

// socketPath returns a unix socket path short enough for sun_path.
func socketPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "control")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "control.sock")
}

func TestCheckAddr(t *testing.T) {
	for _, tc := range []struct {
		addr        string
		allowRemote bool
		ok          bool
	}{
		{"unix:/run/incpathd/control.sock", false, true},
		{"unix:run/control.sock", false, false},
		{"127.0.0.1:9002", false, true},
		{"127.0.0.2:9002", false, true},
		{"[::1]:9002", false, true},
		{"localhost:9002", false, true},
		{"0.0.0.0:9002", false, false},
		{":9002", false, false},
		{"192.0.2.10:9002", false, false},
		{"[::]:9002", false, false},
		{"example.com:9002", false, false},
		{"192.0.2.10:9002", true, true},
		{"127.0.0.1", false, false},
		{"127.0.0.1:http", false, false},
		{"127.0.0.1:70000", false, false},
	} {
		err := CheckAddr(tc.addr, tc.allowRemote)
		if tc.ok {
			assert.NoError(t, err, tc.addr)
		} else {
			assert.Error(t, err, tc.addr)
		}
	}
	assert.ErrorIs(t, CheckAddr("0.0.0.0:1", false), ErrNotLoopback)
}

func TestListenUnixMode(t *testing.T) {
	path := socketPath(t)
	l, err := Listen("unix:"+path, DefaultMode, false)
	require.NoError(t, err)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.ModeSocket, fi.Mode().Type())
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	entries, _ := os.ReadDir(filepath.Dir(path))
	assert.Len(t, entries, 1, "no temporary name left behind")

	// A live socket is not taken over.
	_, err = Listen("unix:"+path, DefaultMode, false)
	assert.ErrorContains(t, err, "another process")

	require.NoError(t, l.Close())
	_, err = os.Lstat(path)
	assert.ErrorIs(t, err, os.ErrNotExist, "Close removes the socket")

	// Another mode, over a stale socket left by a crash.
	stale, err := net.Listen("unix", path)
	require.NoError(t, err)
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	l, err = Listen("unix:"+path, 0o660, false)
	require.NoError(t, err)
	defer l.Close()
	fi, err = os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o660), fi.Mode().Perm())
}

func TestListenRefusesAFile(t *testing.T) {
	path := socketPath(t)
	require.NoError(t, os.WriteFile(path, []byte("keep me"), 0o644))
	_, err := Listen("unix:"+path, DefaultMode, false)
	require.ErrorContains(t, err, "not a socket")
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "keep me", string(b))
}

func TestListenTCP(t *testing.T) {
	l, err := Listen("127.0.0.1:0", DefaultMode, false)
	require.NoError(t, err)
	l.Close()
	l, err = Listen("localhost:0", DefaultMode, false)
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1", l.Addr().(*net.TCPAddr).IP.String())
	l.Close()
	_, err = Listen("0.0.0.0:0", DefaultMode, false)
	assert.ErrorIs(t, err, ErrNotLoopback)
}

func serve(t *testing.T, status func() Status) string {
	t.Helper()
	path := socketPath(t)
	l, err := Listen("unix:"+path, DefaultMode, false)
	require.NoError(t, err)
	srv := Server(status)
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	})
	return "unix:" + path
}

func TestClientAndHandler(t *testing.T) {
	want := Status{
		Releases: []inflight.Release{{Path: "/srv/site/releases/A", InFlight: 2}},
		Links:    []Link{{Docroot: "/srv/site/current", Target: "/srv/site/releases/B", Cached: "/srv/site/releases/B", Watched: true}},
		Resolver: ResolverStats{Resolutions: 3, Hits: 10, Misses: 3, Watching: true},
	}
	addr := serve(t, func() Status { return want })
	c := &Client{Addr: addr}
	defer c.Close()
	got, err := c.Status(context.Background())
	require.NoError(t, err)
	assert.Equal(t, want, *got)

	// Only GET /releases.
	hc := &http.Client{Transport: c.client().Transport}
	resp, err := hc.Post("http://x/releases", "text/plain", nil)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	resp, err = hc.Get("http://x/other")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)

	// The JSON field names are the documented ones.
	resp, err = hc.Get("http://x/releases")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var raw map[string]any
	require.NoError(t, json.Unmarshal(body, &raw))
	assert.Equal(t, []any{map[string]any{"path": "/srv/site/releases/A", "in_flight": 2.0}}, raw["releases"])
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
}

func TestClientUnreachable(t *testing.T) {
	c := &Client{Addr: "unix:" + socketPath(t)}
	_, err := c.Status(context.Background())
	assert.ErrorContains(t, err, "control: unix:")
}

func TestBusy(t *testing.T) {
	st := Status{
		Releases: []inflight.Release{
			{Path: "/srv/site/releases/A/public", InFlight: 1},
			{Path: "/srv/site/releases/AB", InFlight: 5},
		},
		Links: []Link{
			{Docroot: "/srv/site/current", Target: "/srv/site/releases/C", Cached: "/srv/site/releases/B"},
			{Docroot: "/srv/other/current", Error: "gone"},
		},
	}
	assert.Equal(t, []string{"1 request in flight on /srv/site/releases/A/public"}, st.Busy("/srv/site/releases/A"),
		"below the release counts; a sibling with a longer name does not")
	assert.Equal(t, []string{"/srv/site/current points at it (/srv/site/releases/C)"}, st.Busy("/srv/site/releases/C"))
	assert.Equal(t, []string{"new requests for /srv/site/current are still pinned to it (/srv/site/releases/B) until incpathd sees the change"},
		st.Busy("/srv/site/releases/B"))
	assert.Equal(t, []string{"5 requests in flight on /srv/site/releases/AB"}, st.Busy("/elsewhere", "/srv/site/releases/AB"), "any form matches")
	assert.Empty(t, st.Busy("/srv/site/releases/D"))
	assert.Empty(t, st.Busy(""))
}

// Source reports a real Resolver, Watcher and Tracker.
func TestSourceStatus(t *testing.T) {
	root, err := filepath.EvalSymlinks(t.TempDir())
	require.NoError(t, err)
	a := filepath.Join(root, "releases", "A")
	b := filepath.Join(root, "releases", "B")
	require.NoError(t, os.MkdirAll(a, 0o755))
	require.NoError(t, os.MkdirAll(b, 0o755))
	current := filepath.Join(root, "current")
	require.NoError(t, os.Symlink("releases/A", current))

	w := &pin.Watcher{}
	r := &pin.Resolver{Every: time.Hour, Watcher: w}
	require.NoError(t, r.Start())
	defer w.Close()
	var tr inflight.Tracker
	src := &Source{Releases: &tr, Resolver: r, Watcher: w}

	got, err := r.Resolve(current)
	require.NoError(t, err)
	c := tr.Acquire(got)
	st := src.Status()
	assert.Equal(t, []inflight.Release{{Path: a, InFlight: 1}}, st.Releases)
	assert.Equal(t, []Link{{Docroot: current, Target: a, Cached: a, Watched: true}}, st.Links)
	assert.EqualValues(t, 1, st.Resolver.Resolutions)
	assert.True(t, st.Resolver.Watching)
	assert.NotEmpty(t, st.Busy(a))

	// Flipped: A is no longer a target once the watcher has seen it, but
	// the request keeps it busy until it ends.
	tmp := current + ".tmp"
	require.NoError(t, os.Symlink("releases/B", tmp))
	require.NoError(t, os.Rename(tmp, current))
	deadline := time.Now().Add(5 * time.Second)
	for len(r.Cached()) > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	st = src.Status()
	assert.Equal(t, []Link{{Docroot: current, Target: b, Watched: false}}, st.Links, "forgotten, not yet resolved again")
	assert.Equal(t, []string{"1 request in flight on " + a}, st.Busy(a))
	c.Done()
	st = src.Status()
	assert.Empty(t, st.Busy(a))
	assert.NotEmpty(t, st.Busy(b))
	assert.Equal(t, []inflight.Release{}, st.Releases)
}
