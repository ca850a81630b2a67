package proxy

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/internal/fcgitest"
	"github.com/incpathd/incpathd/pin"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// front runs p behind an fcgi.Server on loopback until the test ends and
// returns its address. A nil p.Logger is set to a quiet one; the server
// logs there too.
func front(tb testing.TB, p *Proxy) string {
	tb.Helper()
	if p.Logger == nil {
		p.Logger = quietLogger()
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	srv := &fcgi.Server{Handler: p, Logger: p.Logger, ReadTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { srv.Serve(l); close(done) }()
	tb.Cleanup(func() {
		srv.Close()
		<-done
		p.Pool.Close()
	})
	return l.Addr().String()
}

// site is a two-release directory with current -> releases/A.
func site(t *testing.T) (current, a, b string) {
	t.Helper()
	root, err := filepath.EvalSymlinks(t.TempDir())
	require.NoError(t, err)
	a, b = filepath.Join(root, "releases", "A"), filepath.Join(root, "releases", "B")
	require.NoError(t, os.MkdirAll(a, 0o755))
	require.NoError(t, os.MkdirAll(b, 0o755))
	current = filepath.Join(root, "current")
	require.NoError(t, os.Symlink("releases/A", current))
	return current, a, b
}

func nginxParams(docroot string) []fcgi.Pair {
	return []fcgi.Pair{
		{Name: "SCRIPT_FILENAME", Value: docroot + "/index.php"},
		{Name: "QUERY_STRING", Value: ""},
		{Name: "REQUEST_METHOD", Value: "GET"},
		{Name: "SCRIPT_NAME", Value: "/index.php"},
		{Name: "REQUEST_URI", Value: "/index.php"},
		{Name: "DOCUMENT_ROOT", Value: docroot},
		{Name: "SERVER_SOFTWARE", Value: "nginx/1.22.1"},
		{Name: "REMOTE_ADDR", Value: "127.0.0.1"},
		{Name: "PHP_VALUE", Value: "include_path=\".:" + docroot + "/include\"\nmemory_limit=256M"},
	}
}

func get(params []fcgi.Pair, name string) string { return fcgi.Param(params, name) }

func ok(w *fcgi.ResponseWriter, r *fcgi.Request) {
	io.Copy(io.Discard, &r.Body)
	w.Write([]byte("Content-Type: text/plain\r\n\r\nhello"))
}

func TestPinsParams(t *testing.T) {
	current, a, _ := site(t)
	u := fcgitest.StartHandler(t, ok)
	p := &Proxy{Pool: &fcgi.Pool{Address: u.Addr}, Pinner: pin.Pinner{Resolver: &pin.Resolver{Every: time.Second}}}
	c := fcgitest.Dial(t, front(t, p))
	res := c.Do(nginxParams(current), nil)
	require.NoError(t, res.Err)
	assert.Equal(t, "Content-Type: text/plain\r\n\r\nhello", string(res.Stdout))

	got := u.Params()[0]
	assert.Equal(t, a, get(got, "DOCUMENT_ROOT"))
	assert.Equal(t, a+"/index.php", get(got, "SCRIPT_FILENAME"))
	assert.Contains(t, get(got, "PHP_VALUE"), `include_path=".:`+a+`/include"`)
	assert.Contains(t, get(got, "PHP_VALUE"), "memory_limit=256M")
	assert.Equal(t, uint64(1), p.Stats().Pinned.Load())
}

func TestPassthroughFrontEnd(t *testing.T) {
	current, _, _ := site(t)
	u := fcgitest.StartHandler(t, ok)
	p := &Proxy{
		Pool: &fcgi.Pool{Address: u.Addr},
		Pinner: pin.Pinner{
			Policy: pin.Policy{RealpathList: []string{"apache"}},
		},
	}
	c := fcgitest.Dial(t, front(t, p))
	in := nginxParams(current)
	res := c.Do(in, nil)
	require.NoError(t, res.Err)
	assert.Equal(t, in, u.Params()[0], "a front end in neither list is passed through untouched")
	assert.Equal(t, uint64(1), p.Stats().Passthrough.Load())
}

func TestStderrAndStatusesPassThrough(t *testing.T) {
	current, _, _ := site(t)
	u := fcgitest.StartHandler(t, func(w *fcgi.ResponseWriter, r *fcgi.Request) {
		w.WriteRecord(fcgi.TypeStderr, []byte("PHP Warning: x"))
		w.Write([]byte("Status: 500\r\n\r\nboom"))
		w.End(255, fcgi.StatusRequestComplete)
	})
	p := &Proxy{Pool: &fcgi.Pool{Address: u.Addr}}
	c := fcgitest.Dial(t, front(t, p))
	res := c.Do(nginxParams(current), nil)
	require.NoError(t, res.Err)
	assert.Equal(t, "PHP Warning: x", string(res.Stderr))
	assert.Equal(t, "Status: 500\r\n\r\nboom", string(res.Stdout))
	assert.Equal(t, uint32(255), res.End.AppStatus)
}

func TestStreamsBodyAndResponse(t *testing.T) {
	current, _, _ := site(t)
	u := fcgitest.StartHandler(t, func(w *fcgi.ResponseWriter, r *fcgi.Request) {
		body, _ := io.ReadAll(&r.Body)
		w.Write([]byte("\r\n"))
		w.Write(body)
		w.Write(body)
	})
	p := &Proxy{Pool: &fcgi.Pool{Address: u.Addr}}
	c := fcgitest.Dial(t, front(t, p))
	body := bytes.Repeat([]byte("0123456789abcdef"), 300_000) // 4.8 MB, many records
	res := c.Do(nginxParams(current), body)
	require.NoError(t, res.Err)
	require.Equal(t, 2+2*len(body), len(res.Stdout))
	assert.True(t, bytes.Equal(body, res.Stdout[2:2+len(body)]))
	// The connections carry a second request.
	res = c.Do(nginxParams(current), []byte("x"))
	require.NoError(t, res.Err)
	assert.Equal(t, "\r\nxx", string(res.Stdout))
	assert.Equal(t, 1, p.Pool.Stats().Open)
}

// readRequest reads one request's records up to its empty STDIN.
func readRequest(r *fcgi.Reader) error {
	_, _, err := fcgitest.ReadRequest(r)
	return err
}

func answer(c net.Conn, body string) {
	bw := bufio.NewWriter(c)
	w := fcgi.NewWriter(bw)
	w.WriteRecord(fcgi.TypeStdout, 1, []byte("\r\n"+body))
	w.WriteRecord(fcgi.TypeStdout, 1, nil)
	w.WriteEndRequest(1, 0, fcgi.StatusRequestComplete)
	bw.Flush()
}

// php-fpm closes a kept connection when its worker is recycled; if that
// happens as our request arrives, the request is replayed on a fresh one.
func TestRetriesReusedConnectionOnce(t *testing.T) {
	current, _, _ := site(t)
	addr := fcgitest.StartRaw(t, func(n int, c net.Conn) {
		r := fcgi.NewReader(c)
		if readRequest(r) != nil {
			return
		}
		answer(c, "first")
		if n == 0 {
			// The worker dies as the second request arrives.
			readRequest(r)
			return
		}
		for readRequest(r) == nil {
			answer(c, "again")
		}
	})
	p := &Proxy{Pool: &fcgi.Pool{Address: addr}}
	c := fcgitest.Dial(t, front(t, p))
	res := c.Do(nginxParams(current), nil)
	require.NoError(t, res.Err)
	assert.Equal(t, "\r\nfirst", string(res.Stdout))
	res = c.Do(nginxParams(current), nil)
	require.NoError(t, res.Err)
	assert.Equal(t, "\r\nfirst", string(res.Stdout), "served by a fresh connection")
	assert.Equal(t, uint64(1), p.Stats().Retries.Load())
}

// A fresh connection that fails is not retried: the failure is real.
func TestUpstreamClosesBeforeAnswer(t *testing.T) {
	current, _, _ := site(t)
	addr := fcgitest.StartRaw(t, func(n int, c net.Conn) { readRequest(fcgi.NewReader(c)) })
	p := &Proxy{Pool: &fcgi.Pool{Address: addr}}
	c := fcgitest.Dial(t, front(t, p))
	res := c.Do(nginxParams(current), nil)
	require.NoError(t, res.Err)
	assert.True(t, strings.HasPrefix(string(res.Stdout), "Status: 502 Bad Gateway\r\n"), "%q", res.Stdout)
	assert.Equal(t, uint64(0), p.Stats().Retries.Load())
	assert.Equal(t, 0, p.Pool.Stats().Open)
}

// Once answer bytes went out, no error page can follow: the web server's
// connection is dropped so it sees a broken response, not a short one.
func TestUpstreamFailsMidResponse(t *testing.T) {
	current, _, _ := site(t)
	addr := fcgitest.StartRaw(t, func(n int, c net.Conn) {
		if readRequest(fcgi.NewReader(c)) != nil {
			return
		}
		bw := bufio.NewWriter(c)
		fcgi.NewWriter(bw).WriteRecord(fcgi.TypeStdout, 1, []byte("\r\npartial"))
		bw.Flush()
	})
	p := &Proxy{Pool: &fcgi.Pool{Address: addr}}
	c := fcgitest.Dial(t, front(t, p))
	res := c.Do(nginxParams(current), nil)
	assert.Equal(t, "\r\npartial", string(res.Stdout))
	assert.Nil(t, res.End, "no END_REQUEST after a broken response")
	assert.ErrorIs(t, res.Err, io.EOF)
	assert.Equal(t, 0, p.Pool.Stats().Open)
}

func TestUpstreamDown(t *testing.T) {
	current, _, _ := site(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	l.Close()
	p := &Proxy{Pool: &fcgi.Pool{Address: addr}}
	c := fcgitest.Dial(t, front(t, p))
	res := c.Do(nginxParams(current), nil)
	require.NoError(t, res.Err)
	assert.Contains(t, string(res.Stdout), "Status: 502 Bad Gateway\r\n")
	assert.Contains(t, string(res.Stdout), "application server unavailable")
}

func TestRefusals(t *testing.T) {
	current, _, _ := site(t)
	dangling := filepath.Join(filepath.Dir(current), "dangling")
	require.NoError(t, os.Symlink("releases/nope", dangling))
	u := fcgitest.StartHandler(t, ok)
	p := &Proxy{Pool: &fcgi.Pool{Address: u.Addr}, Pinner: pin.Pinner{Resolver: &pin.Resolver{AllowRoots: []string{filepath.Dir(current)}}}}
	c := fcgitest.Dial(t, front(t, p))
	for _, tc := range []struct {
		name   string
		params []fcgi.Pair
		status string
	}{
		{"dangling docroot", nginxParams(dangling), "503"},
		{"missing docroot", nginxParams(current + "-gone"), "503"},
		{"outside allowed roots", nginxParams("/tmp"), "403"},
		{"dot-dot in script", append(nginxParams(current), fcgi.Pair{Name: "SCRIPT_FILENAME", Value: current + "/../x.php"}), "400"},
		{"no docroot", []fcgi.Pair{{Name: "SERVER_SOFTWARE", Value: "nginx/1"}}, "500"},
	} {
		res := c.Do(tc.params, nil)
		require.NoError(t, res.Err, tc.name)
		assert.True(t, strings.HasPrefix(string(res.Stdout), "Status: "+tc.status+" "), "%s: %q", tc.name, res.Stdout)
	}
	assert.Empty(t, u.Params(), "refused requests never reach the upstream")
}

func TestQueueTimeout(t *testing.T) {
	current, _, _ := site(t)
	release := make(chan struct{})
	u := fcgitest.StartHandler(t, func(w *fcgi.ResponseWriter, r *fcgi.Request) {
		<-release
		ok(w, r)
	})
	defer close(release)
	p := &Proxy{Pool: &fcgi.Pool{Address: u.Addr, MaxConns: 1, WaitTimeout: 100 * time.Millisecond}}
	addr := front(t, p)
	busy := fcgitest.Dial(t, addr)
	require.NoError(t, busy.Send(nginxParams(current), nil, true))
	require.Eventually(t, func() bool { return p.Pool.Stats().Open == 1 }, 5*time.Second, time.Millisecond)

	c := fcgitest.Dial(t, addr)
	res := c.Do(nginxParams(current), nil)
	require.NoError(t, res.Err)
	assert.Contains(t, string(res.Stdout), "Status: 503 Service Unavailable\r\n")
}

// When the web server aborts, the upstream connection is closed, not
// pooled, and nothing is left running.
func TestAbortClosesUpstream(t *testing.T) {
	current, _, _ := site(t)
	received, closed := make(chan struct{}), make(chan struct{})
	addr := fcgitest.StartRaw(t, func(n int, c net.Conn) {
		if readRequest(fcgi.NewReader(c)) != nil {
			return
		}
		close(received)
		c.Read(make([]byte, 1)) // blocks until incpathd closes it
		close(closed)
	})
	before := runtime.NumGoroutine()
	p := &Proxy{Pool: &fcgi.Pool{Address: addr}}
	c := fcgitest.Dial(t, front(t, p))
	require.NoError(t, c.Send(nginxParams(current), nil, true))
	<-received // an abort before this point never reaches the upstream at all
	require.NoError(t, c.W.WriteRecord(fcgi.TypeAbortRequest, 1, nil))
	require.NoError(t, c.W.Flush())
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("upstream connection still open after the abort")
	}
	require.Eventually(t, func() bool { return p.Pool.Stats().Open == 0 }, 5*time.Second, time.Millisecond)
	assert.Eventually(t, func() bool { return runtime.NumGoroutine() <= before+4 }, 5*time.Second, 10*time.Millisecond)
}

// An application that answers before reading its body gets its answer
// through; the upstream connection is not reused.
func TestAnswerBeforeBody(t *testing.T) {
	current, _, _ := site(t)
	addr := fcgitest.StartRaw(t, func(n int, c net.Conn) {
		r := fcgi.NewReader(c)
		for {
			h, _, err := r.Next()
			if err != nil {
				return
			}
			if h.Type == fcgi.TypeStdin {
				break
			}
		}
		answer(c, "early")
		io.Copy(io.Discard, c)
	})
	p := &Proxy{Pool: &fcgi.Pool{Address: addr}}
	c := fcgitest.Dial(t, front(t, p))
	require.NoError(t, c.W.WriteBeginRequest(1, fcgi.RoleResponder, fcgi.FlagKeepConn))
	require.NoError(t, c.W.WriteParams(1, nginxParams(current)))
	require.NoError(t, c.W.WriteRecord(fcgi.TypeStdin, 1, []byte("first chunk")))
	require.NoError(t, c.W.Flush()) // and the rest never comes
	res := c.Read()
	require.NoError(t, res.Err)
	assert.Equal(t, "\r\nearly", string(res.Stdout))
	require.Eventually(t, func() bool { return p.Pool.Stats().Open == 0 }, 5*time.Second, time.Millisecond)
	_, _, err := c.R.Next()
	assert.Error(t, err, "the web server connection is closed: the rest of its body would be out of step")
}

func TestClassify(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		err  error
		want int
	}{
		{pin.ErrOutsideRoot, 403},
		{pin.ErrUnresolvable, 503},
		{fcgi.ErrPoolTimeout, 503},
		{fcgi.ErrDial, 502},
		{fcgi.ErrAborted, 499},
		{ctx.Err(), 502},
		{fcgi.ErrUpstream, 502},
	} {
		got, _ := classify(tc.err)
		assert.Equal(t, tc.want, got, "%v", tc.err)
	}
}

// A web server that goes away mid-body: the upstream connection is closed,
// and nothing is left running.
func TestClientGoneMidBody(t *testing.T) {
	current, _, _ := site(t)
	got := make(chan struct{})
	closed := make(chan struct{})
	addr := fcgitest.StartRaw(t, func(n int, c net.Conn) {
		r := fcgi.NewReader(c)
		for {
			h, _, err := r.Next()
			if err != nil {
				close(closed)
				return
			}
			if h.Type == fcgi.TypeStdin {
				select {
				case <-got:
				default:
					close(got)
				}
			}
		}
	})
	before := runtime.NumGoroutine()
	p := &Proxy{Pool: &fcgi.Pool{Address: addr}}
	c := fcgitest.Dial(t, front(t, p))
	require.NoError(t, c.W.WriteBeginRequest(1, fcgi.RoleResponder, fcgi.FlagKeepConn))
	require.NoError(t, c.W.WriteParams(1, nginxParams(current)))
	require.NoError(t, c.W.WriteRecord(fcgi.TypeStdin, 1, []byte("part of a body")))
	require.NoError(t, c.W.Flush())
	<-got
	c.Conn.Close()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("upstream connection still open after the web server left")
	}
	require.Eventually(t, func() bool { return p.Pool.Stats().Open == 0 }, 5*time.Second, time.Millisecond)
	assert.Eventually(t, func() bool { return runtime.NumGoroutine() <= before+4 }, 5*time.Second, 10*time.Millisecond)
}
