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
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/pin"
)

// upstream is an in-process FastCGI application built on fcgi.Server: it
// records what it receives and answers with respond.
type upstream struct {
	addr    string
	srv     *fcgi.Server
	mu      sync.Mutex
	got     [][]fcgi.Pair
	respond func(w *fcgi.ResponseWriter, r *fcgi.Request)
}

func startUpstream(t *testing.T, respond func(w *fcgi.ResponseWriter, r *fcgi.Request)) *upstream {
	t.Helper()
	u := &upstream{respond: respond}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	u.addr = l.Addr().String()
	u.srv = &fcgi.Server{Handler: fcgi.HandlerFunc(func(w *fcgi.ResponseWriter, r *fcgi.Request) {
		u.mu.Lock()
		// Params are only valid during the call: keep copies.
		got := make([]fcgi.Pair, len(r.Params))
		for i, p := range r.Params {
			got[i] = fcgi.Pair{Name: strings.Clone(p.Name), Value: strings.Clone(p.Value)}
		}
		u.got = append(u.got, got)
		u.mu.Unlock()
		u.respond(w, r)
	}), Logger: quietLogger()}
	go u.srv.Serve(l)
	t.Cleanup(func() { u.srv.Close() })
	return u
}

func (u *upstream) requests() [][]fcgi.Pair {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([][]fcgi.Pair(nil), u.got...)
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// front runs a Proxy behind an fcgi.Server on loopback and returns its
// address.
func front(t *testing.T, p *Proxy) string {
	t.Helper()
	if p.Logger == nil {
		p.Logger = quietLogger()
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &fcgi.Server{Handler: p, Logger: p.Logger, ReadTimeout: 5 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() {
		srv.Close()
		p.Pool.Close()
	})
	return l.Addr().String()
}

// response is what a web server got back for one request.
type response struct {
	stdout, stderr []byte
	end            *fcgi.EndRequest
	err            error // the connection failed before END_REQUEST
}

// client is a web server's side of one FastCGI connection.
type client struct {
	nc net.Conn
	w  *fcgi.Writer
	bw *bufio.Writer
	r  *fcgi.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	bw := bufio.NewWriter(nc)
	return &client{nc: nc, w: fcgi.NewWriter(bw), bw: bw, r: fcgi.NewReader(nc)}
}

// send writes a request; body nil sends the empty STDIN at once.
func (c *client) send(t *testing.T, params []fcgi.Pair, body []byte, keep bool) {
	t.Helper()
	var flags uint8
	if keep {
		flags = fcgi.FlagKeepConn
	}
	require.NoError(t, c.w.WriteBeginRequest(1, fcgi.RoleResponder, flags))
	require.NoError(t, c.w.WriteParams(1, params))
	if len(body) > 0 {
		require.NoError(t, c.w.WriteRecord(fcgi.TypeStdin, 1, body))
	}
	require.NoError(t, c.w.WriteRecord(fcgi.TypeStdin, 1, nil))
	require.NoError(t, c.w.Flush())
}

func (c *client) read() response {
	var res response
	for {
		h, content, err := c.r.Next()
		if err != nil {
			res.err = err
			return res
		}
		switch h.Type {
		case fcgi.TypeStdout:
			res.stdout = append(res.stdout, content...)
		case fcgi.TypeStderr:
			res.stderr = append(res.stderr, content...)
		case fcgi.TypeEndRequest:
			end, err := fcgi.ParseEndRequest(content)
			res.end, res.err = &end, err
			return res
		}
	}
}

func (c *client) do(t *testing.T, params []fcgi.Pair, body []byte) response {
	t.Helper()
	c.send(t, params, body, true)
	return c.read()
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

func get(params []fcgi.Pair, name string) string { return param(params, name) }

func ok(w *fcgi.ResponseWriter, r *fcgi.Request) {
	io.Copy(io.Discard, &r.Body)
	w.Write([]byte("Content-Type: text/plain\r\n\r\nhello"))
}

func TestPinsParams(t *testing.T) {
	current, a, _ := site(t)
	u := startUpstream(t, ok)
	p := &Proxy{Pool: &fcgi.Pool{Address: u.addr}, Pinner: pin.Pinner{Resolver: &pin.Resolver{Every: time.Second}}}
	c := dial(t, front(t, p))
	res := c.do(t, nginxParams(current), nil)
	require.NoError(t, res.err)
	assert.Equal(t, "Content-Type: text/plain\r\n\r\nhello", string(res.stdout))

	got := u.requests()[0]
	assert.Equal(t, a, get(got, "DOCUMENT_ROOT"))
	assert.Equal(t, a+"/index.php", get(got, "SCRIPT_FILENAME"))
	assert.Contains(t, get(got, "PHP_VALUE"), `include_path=".:`+a+`/include"`)
	assert.Contains(t, get(got, "PHP_VALUE"), "memory_limit=256M")
	assert.Equal(t, uint64(1), p.Stats().Pinned.Load())
}

func TestPassthroughFrontEnd(t *testing.T) {
	current, _, _ := site(t)
	u := startUpstream(t, ok)
	p := &Proxy{
		Pool: &fcgi.Pool{Address: u.addr},
		Pinner: pin.Pinner{
			Policy: pin.Policy{RealpathList: []string{"apache"}},
		},
	}
	c := dial(t, front(t, p))
	in := nginxParams(current)
	res := c.do(t, in, nil)
	require.NoError(t, res.err)
	assert.Equal(t, in, u.requests()[0], "a front end in neither list is passed through untouched")
	assert.Equal(t, uint64(1), p.Stats().Passthrough.Load())
}

func TestStderrAndStatusesPassThrough(t *testing.T) {
	current, _, _ := site(t)
	u := startUpstream(t, func(w *fcgi.ResponseWriter, r *fcgi.Request) {
		w.WriteRecord(fcgi.TypeStderr, []byte("PHP Warning: x"))
		w.Write([]byte("Status: 500\r\n\r\nboom"))
		w.End(255, fcgi.StatusRequestComplete)
	})
	p := &Proxy{Pool: &fcgi.Pool{Address: u.addr}}
	c := dial(t, front(t, p))
	res := c.do(t, nginxParams(current), nil)
	require.NoError(t, res.err)
	assert.Equal(t, "PHP Warning: x", string(res.stderr))
	assert.Equal(t, "Status: 500\r\n\r\nboom", string(res.stdout))
	assert.Equal(t, uint32(255), res.end.AppStatus)
}

func TestStreamsBodyAndResponse(t *testing.T) {
	current, _, _ := site(t)
	u := startUpstream(t, func(w *fcgi.ResponseWriter, r *fcgi.Request) {
		body, _ := io.ReadAll(&r.Body)
		w.Write([]byte("\r\n"))
		w.Write(body)
		w.Write(body)
	})
	p := &Proxy{Pool: &fcgi.Pool{Address: u.addr}}
	c := dial(t, front(t, p))
	body := bytes.Repeat([]byte("0123456789abcdef"), 300_000) // 4.8 MB, many records
	res := c.do(t, nginxParams(current), body)
	require.NoError(t, res.err)
	require.Equal(t, 2+2*len(body), len(res.stdout))
	assert.True(t, bytes.Equal(body, res.stdout[2:2+len(body)]))
	// The connections carry a second request.
	res = c.do(t, nginxParams(current), []byte("x"))
	require.NoError(t, res.err)
	assert.Equal(t, "\r\nxx", string(res.stdout))
	assert.Equal(t, 1, p.Pool.Stats().Open)
}

// rawUpstream accepts connections and runs serve on each.
func rawUpstream(t *testing.T, serve func(n int, c net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; ; n++ {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); defer c.Close(); serve(n, c) }()
		}
	}()
	return l.Addr().String()
}

// readRequest reads one request's records up to its empty STDIN.
func readRequest(r *fcgi.Reader) error {
	for {
		h, content, err := r.Next()
		if err != nil {
			return err
		}
		if h.Type == fcgi.TypeStdin && len(content) == 0 {
			return nil
		}
	}
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
	addr := rawUpstream(t, func(n int, c net.Conn) {
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
	c := dial(t, front(t, p))
	res := c.do(t, nginxParams(current), nil)
	require.NoError(t, res.err)
	assert.Equal(t, "\r\nfirst", string(res.stdout))
	res = c.do(t, nginxParams(current), nil)
	require.NoError(t, res.err)
	assert.Equal(t, "\r\nfirst", string(res.stdout), "served by a fresh connection")
	assert.Equal(t, uint64(1), p.Stats().Retries.Load())
}

// A fresh connection that fails is not retried: the failure is real.
func TestUpstreamClosesBeforeAnswer(t *testing.T) {
	current, _, _ := site(t)
	addr := rawUpstream(t, func(n int, c net.Conn) { readRequest(fcgi.NewReader(c)) })
	p := &Proxy{Pool: &fcgi.Pool{Address: addr}}
	c := dial(t, front(t, p))
	res := c.do(t, nginxParams(current), nil)
	require.NoError(t, res.err)
	assert.True(t, strings.HasPrefix(string(res.stdout), "Status: 502 Bad Gateway\r\n"), "%q", res.stdout)
	assert.Equal(t, uint64(0), p.Stats().Retries.Load())
	assert.Equal(t, 0, p.Pool.Stats().Open)
}

// Once answer bytes went out, no error page can follow: the web server's
// connection is dropped so it sees a broken response, not a short one.
func TestUpstreamFailsMidResponse(t *testing.T) {
	current, _, _ := site(t)
	addr := rawUpstream(t, func(n int, c net.Conn) {
		if readRequest(fcgi.NewReader(c)) != nil {
			return
		}
		bw := bufio.NewWriter(c)
		fcgi.NewWriter(bw).WriteRecord(fcgi.TypeStdout, 1, []byte("\r\npartial"))
		bw.Flush()
	})
	p := &Proxy{Pool: &fcgi.Pool{Address: addr}}
	c := dial(t, front(t, p))
	res := c.do(t, nginxParams(current), nil)
	assert.Equal(t, "\r\npartial", string(res.stdout))
	assert.Nil(t, res.end, "no END_REQUEST after a broken response")
	assert.ErrorIs(t, res.err, io.EOF)
	assert.Equal(t, 0, p.Pool.Stats().Open)
}

func TestUpstreamDown(t *testing.T) {
	current, _, _ := site(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	l.Close()
	p := &Proxy{Pool: &fcgi.Pool{Address: addr}}
	c := dial(t, front(t, p))
	res := c.do(t, nginxParams(current), nil)
	require.NoError(t, res.err)
	assert.Contains(t, string(res.stdout), "Status: 502 Bad Gateway\r\n")
	assert.Contains(t, string(res.stdout), "application server unavailable")
}

func TestRefusals(t *testing.T) {
	current, _, _ := site(t)
	dangling := filepath.Join(filepath.Dir(current), "dangling")
	require.NoError(t, os.Symlink("releases/nope", dangling))
	u := startUpstream(t, ok)
	p := &Proxy{Pool: &fcgi.Pool{Address: u.addr}, Pinner: pin.Pinner{Resolver: &pin.Resolver{AllowRoots: []string{filepath.Dir(current)}}}}
	c := dial(t, front(t, p))
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
		res := c.do(t, tc.params, nil)
		require.NoError(t, res.err, tc.name)
		assert.True(t, strings.HasPrefix(string(res.stdout), "Status: "+tc.status+" "), "%s: %q", tc.name, res.stdout)
	}
	assert.Empty(t, u.requests(), "refused requests never reach the upstream")
}

func TestQueueTimeout(t *testing.T) {
	current, _, _ := site(t)
	release := make(chan struct{})
	u := startUpstream(t, func(w *fcgi.ResponseWriter, r *fcgi.Request) {
		<-release
		ok(w, r)
	})
	defer close(release)
	p := &Proxy{Pool: &fcgi.Pool{Address: u.addr, MaxConns: 1, WaitTimeout: 100 * time.Millisecond}}
	addr := front(t, p)
	busy := dial(t, addr)
	busy.send(t, nginxParams(current), nil, true)
	require.Eventually(t, func() bool { return p.Pool.Stats().Open == 1 }, 5*time.Second, time.Millisecond)

	c := dial(t, addr)
	res := c.do(t, nginxParams(current), nil)
	require.NoError(t, res.err)
	assert.Contains(t, string(res.stdout), "Status: 503 Service Unavailable\r\n")
}

// When the web server aborts, the upstream connection is closed, not
// pooled, and nothing is left running.
func TestAbortClosesUpstream(t *testing.T) {
	current, _, _ := site(t)
	received, closed := make(chan struct{}), make(chan struct{})
	addr := rawUpstream(t, func(n int, c net.Conn) {
		if readRequest(fcgi.NewReader(c)) != nil {
			return
		}
		close(received)
		c.Read(make([]byte, 1)) // blocks until incpathd closes it
		close(closed)
	})
	before := runtime.NumGoroutine()
	p := &Proxy{Pool: &fcgi.Pool{Address: addr}}
	c := dial(t, front(t, p))
	c.send(t, nginxParams(current), nil, true)
	<-received // an abort before this point never reaches the upstream at all
	require.NoError(t, c.w.WriteRecord(fcgi.TypeAbortRequest, 1, nil))
	require.NoError(t, c.w.Flush())
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
	addr := rawUpstream(t, func(n int, c net.Conn) {
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
	c := dial(t, front(t, p))
	require.NoError(t, c.w.WriteBeginRequest(1, fcgi.RoleResponder, fcgi.FlagKeepConn))
	require.NoError(t, c.w.WriteParams(1, nginxParams(current)))
	require.NoError(t, c.w.WriteRecord(fcgi.TypeStdin, 1, []byte("first chunk")))
	require.NoError(t, c.w.Flush()) // and the rest never comes
	res := c.read()
	require.NoError(t, res.err)
	assert.Equal(t, "\r\nearly", string(res.stdout))
	require.Eventually(t, func() bool { return p.Pool.Stats().Open == 0 }, 5*time.Second, time.Millisecond)
	_, _, err := c.r.Next()
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
		{ErrUpstream, 502},
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
	addr := rawUpstream(t, func(n int, c net.Conn) {
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
	c := dial(t, front(t, p))
	require.NoError(t, c.w.WriteBeginRequest(1, fcgi.RoleResponder, fcgi.FlagKeepConn))
	require.NoError(t, c.w.WriteParams(1, nginxParams(current)))
	require.NoError(t, c.w.WriteRecord(fcgi.TypeStdin, 1, []byte("part of a body")))
	require.NoError(t, c.w.Flush())
	<-got
	c.nc.Close()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("upstream connection still open after the web server left")
	}
	require.Eventually(t, func() bool { return p.Pool.Stats().Open == 0 }, 5*time.Second, time.Millisecond)
	assert.Eventually(t, func() bool { return runtime.NumGoroutine() <= before+4 }, 5*time.Second, 10*time.Millisecond)
}
