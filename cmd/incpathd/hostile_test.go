package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/internal/testenv"
)

// pathSite is a deploy tree for path-safety tests:
//
//	root/releases/A/        the one release (the only allowed root)
//	root/current -> releases/A
//	root/escape  -> outside/ (a directory outside the allowed root)
//	root/loop    -> loop
//	root/dangling -> nowhere
type pathSite struct {
	root, releases, release, current, escape, loop, dangling, outside string
}

func newPathSite(t *testing.T) *pathSite {
	t.Helper()
	d := t.TempDir()
	s := &pathSite{
		root:     d,
		releases: filepath.Join(d, "releases"),
		release:  filepath.Join(d, "releases", "A"),
		current:  filepath.Join(d, "current"),
		escape:   filepath.Join(d, "escape"),
		loop:     filepath.Join(d, "loop"),
		dangling: filepath.Join(d, "dangling"),
		outside:  filepath.Join(d, "outside"),
	}
	require.NoError(t, os.MkdirAll(s.release, 0o755))
	require.NoError(t, os.MkdirAll(s.outside, 0o755))
	require.NoError(t, os.Symlink("releases/A", s.current))
	require.NoError(t, os.Symlink("outside", s.escape))
	require.NoError(t, os.Symlink("loop", s.loop))
	require.NoError(t, os.Symlink("nowhere", s.dangling))
	return s
}

// Requests with unsafe paths are refused with the right status, logged,
// and never reach the application server: the fake upstream records
// everything it receives, and a control request shows that it does.
func TestHostilePathsNeverForwarded(t *testing.T) {
	site := newPathSite(t)
	up := startFakeUpstream(t)
	addr, log, _ := startIncpathd(t,
		"--listen", testenv.FreeAddr(t),
		"--upstream", up.addr,
		"--allow-root", site.releases,
		"--realpath-every", "0",
		"--docroot-sapi-list", "trusted",
		"--log-level", "debug",
	)
	good := baseParams(site.current, "")
	for _, tc := range []struct {
		desc   string
		params []fcgi.Pair
		status int
	}{
		{"dotdot docroot", withParam(good, "DOCUMENT_ROOT", site.current+"/../outside"), 400},
		{"dotdot docroot escaping", withParam(good, "DOCUMENT_ROOT", site.current+"/../../../../etc"), 400},
		{"nul docroot", withParam(good, "DOCUMENT_ROOT", site.current+"\x00/../outside"), 400},
		{"dotdot script", withParam(good, "SCRIPT_FILENAME", site.current+"/../outside/x.php"), 400},
		{"nul script", withParam(good, "SCRIPT_FILENAME", site.current+"/index.php\x00.txt"), 400},
		{"nul path translated", withParam(good, "PATH_TRANSLATED", site.current+"/a\x00b"), 400},
		{"symlink escaping the allowed root", withParam(good, "DOCUMENT_ROOT", site.escape), 403},
		{"script outside the allowed root", withParam(good, "SCRIPT_FILENAME", site.outside+"/x.php"), 403},
		{"trusted docroot outside the allowed root",
			withParam(withParam(good, "INCPATH_SAPI", "trusted"), "DOCUMENT_ROOT", site.outside), 403},
		{"symlink loop", withParam(good, "DOCUMENT_ROOT", site.loop), 503},
		{"dangling symlink", withParam(good, "DOCUMENT_ROOT", site.dangling), 503},
		{"missing docroot", withParam(good, "DOCUMENT_ROOT", site.root+"/missing"), 503},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			marker := "case=" + strings.ReplaceAll(tc.desc, " ", "-")
			c := dialFCGI(t, addr)
			res := c.roundTrip(true, withParam(tc.params, "QUERY_STRING", marker))
			require.NoError(t, res.err)
			require.True(t, res.ended, "no END_REQUEST: %+v", res)
			assert.Equal(t, tc.status, res.status, "%s", res.stdout)
			assert.NotContains(t, res.stdout, site.root, "the client is not shown server paths")
			for _, r := range up.requests() {
				assert.NotEqual(t, marker, r["QUERY_STRING"], "forwarded: %q", r)
			}
			// The refusal leaves the connection usable.
			res = c.roundTrip(true, withParam(good, "QUERY_STRING", "after-"+marker))
			assert.Equal(t, 200, res.status, "%+v", res)
		})
	}
	// The control: good requests are forwarded, pinned.
	reqs := up.requests()
	require.NotEmpty(t, reqs)
	for _, r := range reqs {
		assert.True(t, strings.HasPrefix(r["QUERY_STRING"], "after-case="), "forwarded: %q", r)
		assert.Equal(t, site.release, r["DOCUMENT_ROOT"])
		assert.Equal(t, site.release+"/index.php", r["SCRIPT_FILENAME"])
	}
	logs := log.String()
	assert.Contains(t, logs, "request refused")
	assert.Contains(t, logs, "outside")
	assert.Contains(t, logs, "too many links")
}

// Params over the limits close the connection with a log line and reach
// nothing; a single value too large for one record is refused with 400;
// memory stays bounded however many oversized requests come.
func TestHostileParams(t *testing.T) {
	site := newPathSite(t)
	up := startFakeUpstream(t)
	addr, log, _ := startIncpathd(t,
		"--listen", testenv.FreeAddr(t),
		"--upstream", up.addr,
		"--max-params", "50",
		"--max-params-bytes", "262144",
	)
	good := baseParams(site.current, "")

	t.Run("too many params", func(t *testing.T) {
		params := withParam(good, "QUERY_STRING", "too-many")
		for i := len(params); i <= 50; i++ {
			params = append(params, fcgi.Pair{Name: "HTTP_X_" + strings.Repeat("A", i), Value: "1"})
		}
		res := dialFCGI(t, addr).roundTrip(true, params)
		assert.True(t, res.closed && !res.ended, "%+v", res)
		assert.Contains(t, log.String(), "more than 50 params")
	})
	t.Run("params stream too large", func(t *testing.T) {
		params := withParam(good, "QUERY_STRING", "too-large")
		for range 5 {
			params = append(params, fcgi.Pair{Name: "HTTP_COOKIE", Value: strings.Repeat("c", 60000)})
		}
		res := dialFCGI(t, addr).roundTrip(true, params)
		assert.True(t, res.closed && !res.ended, "%+v", res)
		assert.Contains(t, log.String(), "params exceed limit")
	})
	t.Run("one value larger than a record", func(t *testing.T) {
		c := dialFCGI(t, addr)
		params := append(withParam(good, "QUERY_STRING", "huge-value"), fcgi.Pair{Name: "HTTP_COOKIE", Value: strings.Repeat("c", 100000)})
		res := c.roundTrip(true, params)
		assert.Equal(t, 400, res.status, "%+v", res)
		assert.Contains(t, res.stdout, "request parameters cannot be forwarded")
		assert.Contains(t, log.String(), "larger than one record")
		res = c.roundTrip(true, withParam(good, "QUERY_STRING", "after-huge"))
		assert.Equal(t, 200, res.status, "the connection stays usable: %+v", res)
	})
	for _, r := range up.requests() {
		assert.True(t, strings.HasPrefix(r["QUERY_STRING"], "after-"), "forwarded: %q", r["QUERY_STRING"])
	}

	t.Run("memory bounded", func(t *testing.T) {
		var before runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		// 64 oversized params streams, 8 connections at a time: 18 MiB in.
		big := withParam(good, "HTTP_COOKIE", strings.Repeat("c", 60000))
		for range 4 {
			big = append(big, fcgi.Pair{Name: "HTTP_COOKIE", Value: strings.Repeat("c", 60000)})
		}
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 8 {
					res := dialFCGI(t, addr).roundTrip(false, big)
					assert.False(t, res.ended, "answered: %+v", res)
				}
			})
		}
		wg.Wait()
		var after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&after)
		t.Logf("heap in use: %d KiB before, %d KiB after", before.HeapInuse>>10, after.HeapInuse>>10)
		assert.Less(t, int64(after.HeapInuse)-int64(before.HeapInuse), int64(16<<20), "heap grew")
	})
}

// A web server connection that trickles its request head cannot hold its
// slot: --read-timeout bounds the head from its first byte. With
// --max-client-conns 2 taken by two such connections, a third waits in the
// listen queue and is served once they are cut.
func TestHostileSlowlorisAndClientConnCap(t *testing.T) {
	site := newPathSite(t)
	up := startFakeUpstream(t)
	addr, log, _ := startIncpathd(t,
		"--listen", testenv.FreeAddr(t),
		"--upstream", up.addr,
		"--max-client-conns", "2",
		"--read-timeout", "1s",
	)
	head := encodeRequest(false, baseParams(site.current, "slow"), nil)

	type trickled struct {
		sent int
		took time.Duration
	}
	results := make(chan trickled, 2)
	start := time.Now()
	for range 2 {
		c := dialFCGI(t, addr)
		go func() {
			b := head
			t0 := time.Now()
			n := 0
			for ; n < len(b); n++ {
				if _, err := c.nc.Write(b[n : n+1]); err != nil {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			results <- trickled{n, time.Since(t0)}
		}()
	}
	time.Sleep(200 * time.Millisecond) // both have begun
	third := dialFCGI(t, addr)
	res := third.roundTrip(false, baseParams(site.current, "third"))
	waited := time.Since(start)
	assert.Equal(t, 200, res.status, "%+v", res)
	// It could only be accepted once a trickler was cut, a read timeout
	// after its first byte.
	assert.Greater(t, waited, 900*time.Millisecond, "served before a slot was free")
	for range 2 {
		r := <-results
		assert.Less(t, r.sent, len(head), "a trickled head got through in %v", r.took)
		assert.Less(t, r.took, 10*time.Second)
	}
	assert.Contains(t, log.String(), "timeout")
	for _, r := range up.requests() {
		assert.Equal(t, "third", r["QUERY_STRING"])
	}
}

// httpoxy: a client's "Proxy:" header becomes the HTTP_PROXY param, which
// PHP code would take for its proxy setting. Real nginx sends it; incpathd
// drops it unless --keep-http-proxy, which the application server behind
// (here a fake that records its params) shows. Through real php-fpm, PHP
// sees no HTTP_PROXY either. (php-fpm 8.2 turned out to ignore the param
// itself, so the PHP half alone could not tell whether incpathd drops it.)
func TestE2EHTTPoxy(t *testing.T) {
	get := func(t *testing.T, n *testenv.Nginx) string {
		req, err := http.NewRequest("GET", n.URL+"/server.php?names=HTTP_PROXY,HTTP_X_OTHER", nil)
		require.NoError(t, err)
		req.Header.Set("Proxy", "http://evil.example:3128")
		req.Header.Set("X-Other", "kept")
		resp, err := n.Client().Do(req)
		require.NoError(t, err)
		var body bytes.Buffer
		body.ReadFrom(resp.Body)
		resp.Body.Close()
		require.Equal(t, 200, resp.StatusCode, "%s", body.String())
		return body.String()
	}
	for _, keep := range []bool{false, true} {
		t.Run(map[bool]string{false: "dropped", true: "kept"}[keep], func(t *testing.T) {
			site := testenv.NewSite(t, "A")
			up := startFakeUpstream(t)
			args := []string{"--listen", testenv.FreeAddr(t), "--upstream", up.addr}
			if keep {
				args = append(args, "--keep-http-proxy")
			}
			addr, _, _ := startIncpathd(t, args...)
			n := testenv.StartNginx(t, testenv.NginxOptions{Root: site.Current, FastCGIPass: addr})
			get(t, n)
			reqs := up.requests()
			require.Len(t, reqs, 1)
			assert.Equal(t, "kept", reqs[0]["HTTP_X_OTHER"], "nginx sends the other headers")
			v, ok := reqs[0]["HTTP_PROXY"]
			assert.Equal(t, keep, ok, "HTTP_PROXY forwarded: %v (%q)", ok, v)
		})
	}
	t.Run("php", func(t *testing.T) {
		s := startStack(t, stackOptions{nginx: testenv.NginxOptions{KeepConn: true}})
		body := get(t, s.nginx)
		var r testenv.ServerReport
		require.NoError(t, json.Unmarshal([]byte(body), &r), "%s", body)
		if other := r.Names["HTTP_X_OTHER"]; assert.NotNil(t, other.Server, "other headers reach PHP") {
			assert.Equal(t, "kept", *other.Server)
		}
		assert.NotContains(t, r.Keys, "HTTP_PROXY")
		assert.Nil(t, r.Names["HTTP_PROXY"].Server)
		assert.Nil(t, r.Names["HTTP_PROXY"].Getenv)
	})
}

func TestParseMaxParams(t *testing.T) {
	c, err := parse(nil, func(string) string { return "" }, &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, 1000, c.maxParams)
	_, err = parse([]string{"--max-params", "0"}, func(string) string { return "" }, &bytes.Buffer{})
	if assert.Error(t, err) {
		assert.Contains(t, err.Error(), "--max-params")
	}
}
