package fcgi

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/internal/testsupport"
)

// testServer is a Server on a real listener, closed when the test ends.
type testServer struct {
	*Server
	network, addr string
	logs          *testsupport.LogBuffer

	served   chan error
	once     sync.Once
	serveErr error
}

func startServer(t *testing.T, network string, s *Server) *testServer {
	t.Helper()
	ts := &testServer{Server: s, network: network, logs: &testsupport.LogBuffer{}, served: make(chan error, 1)}
	if s.Logger == nil {
		s.Logger = slog.New(slog.NewTextHandler(ts.logs, nil))
	}
	var l net.Listener
	var err error
	if network == "unix" {
		l, err = net.Listen("unix", filepath.Join(t.TempDir(), "fcgi.sock"))
	} else {
		l, err = net.Listen("tcp", "127.0.0.1:0")
	}
	require.NoError(t, err)
	ts.addr = l.Addr().String()
	go func() { ts.served <- s.Serve(l) }()
	t.Cleanup(func() {
		s.Close()
		if err := ts.wait(); !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve: got %v; want %v", err, ErrServerClosed)
		}
	})
	return ts
}

// wait returns what Serve returned, or a timeout error.
func (ts *testServer) wait() error {
	ts.once.Do(func() {
		select {
		case ts.serveErr = <-ts.served:
		case <-time.After(5 * time.Second):
			ts.serveErr = errors.New("Serve did not return")
		}
	})
	return ts.serveErr
}

// testClient plays the web server with raw records.
type testClient struct {
	t  *testing.T
	nc net.Conn
	r  *bufio.Reader
}

func (ts *testServer) dial(t *testing.T) *testClient {
	t.Helper()
	nc, err := net.Dial(ts.network, ts.addr)
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	return &testClient{t: t, nc: nc, r: bufio.NewReader(nc)}
}

func (c *testClient) send(recs ...[]byte) {
	c.t.Helper()
	_, err := c.nc.Write(cat(recs...))
	require.NoError(c.t, err)
}

func (c *testClient) tryNext(d time.Duration) (rawRecord, error) {
	c.nc.SetReadDeadline(time.Now().Add(d))
	return readRaw(c.r)
}

func (c *testClient) next() rawRecord {
	c.t.Helper()
	rr, err := c.tryNext(5 * time.Second)
	require.NoError(c.t, err)
	return rr
}

// response is what the server sent for one request.
type response struct {
	stdout, stderr string
	stdoutClosed   bool // the empty STDOUT record came
	end            EndRequest
}

// responses reads records until every id in ids has its END_REQUEST.
func (c *testClient) responses(ids ...uint16) map[uint16]*response {
	c.t.Helper()
	out := make(map[uint16]*response)
	for _, id := range ids {
		out[id] = &response{}
	}
	for pending := len(ids); pending > 0; {
		rr := c.next()
		resp, ok := out[rr.ID]
		if !ok {
			c.t.Fatalf("record type %d for request %d; want one of %v", rr.Type, rr.ID, ids)
		}
		switch rr.Type {
		case TypeStdout:
			resp.stdout += string(rr.Content)
			if len(rr.Content) == 0 {
				resp.stdoutClosed = true
			}
		case TypeStderr:
			resp.stderr += string(rr.Content)
		case TypeEndRequest:
			end, err := ParseEndRequest(rr.Content)
			require.NoError(c.t, err)
			resp.end = end
			pending--
		default:
			c.t.Fatalf("record type %d for request %d", rr.Type, rr.ID)
		}
	}
	return out
}

func (c *testClient) response(id uint16) *response {
	c.t.Helper()
	return c.responses(id)[id]
}

// expectClosed checks that the server closes the connection without
// sending anything more.
func (c *testClient) expectClosed() {
	c.t.Helper()
	rr, err := c.tryNext(5 * time.Second)
	if err == nil {
		c.t.Fatalf("got record type %d id %d %q; want the connection closed", rr.Type, rr.ID, rr.Content)
	}
	if err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
		c.t.Fatalf("got %v; want %v", err, io.EOF)
	}
}

// expectQuiet checks that nothing arrives for a while.
func (c *testClient) expectQuiet(d time.Duration) {
	c.t.Helper()
	rr, err := c.tryNext(d)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		c.t.Fatalf("got record %+v, err %v; want nothing", rr, err)
	}
}

// request encodes a whole responder request: BEGIN, PARAMS, the body in
// one STDIN record if there is one, and the empty STDIN record.
func request(id uint16, flags uint8, pairs []Pair, body string) []byte {
	b := cat(beginRec(id, RoleResponder, flags), paramsRecs(id, pairs...))
	if body != "" {
		b = append(b, rec(TypeStdin, id, []byte(body), 0)...)
	}
	return append(b, rec(TypeStdin, id, nil, 0)...)
}

// echo writes the params and the body back.
var echo = HandlerFunc(func(w *ResponseWriter, r *Request) {
	for _, p := range r.Params {
		fmt.Fprintf(w, "%s=%s\n", p.Name, p.Value)
	}
	body, err := io.ReadAll(&r.Body)
	if err != nil {
		fmt.Fprintf(w, "body error: %v\n", err)
		return
	}
	fmt.Fprintf(w, "body=%s\n", body)
})

var testPairs = []Pair{{"SCRIPT_FILENAME", "/srv/www/index.php"}, {"EMPTY", ""}, {"QUERY_STRING", "a=1"}}

const testEcho = "SCRIPT_FILENAME=/srv/www/index.php\nEMPTY=\nQUERY_STRING=a=1\n"

func TestServerEcho(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			testsupport.CheckGoroutines(t)
			ts := startServer(t, network, &Server{Handler: echo})
			c := ts.dial(t)
			c.send(request(1, 0, testPairs, "hello"))
			resp := c.response(1)
			if want := testEcho + "body=hello\n"; resp.stdout != want {
				t.Errorf("got %q; want %q", resp.stdout, want)
			}
			assert.True(t, resp.stdoutClosed, "STDOUT not closed before END_REQUEST")
			assert.Empty(t, resp.stderr)
			assert.Equal(t, EndRequest{0, StatusRequestComplete}, resp.end)
			// Without FCGI_KEEP_CONN the server closes after END_REQUEST.
			c.expectClosed()
			assert.Empty(t, ts.logs.String())
		})
	}
}

func TestServerRequestFields(t *testing.T) {
	testsupport.CheckGoroutines(t)
	type seen struct {
		id       uint16
		keep     bool
		done     bool
		ctxErr   error
		numPairs int
	}
	got := make(chan seen, 2)
	ts := startServer(t, "tcp", &Server{Handler: HandlerFunc(func(w *ResponseWriter, r *Request) {
		got <- seen{r.ID, r.KeepConn, r.Body.Done(), r.Context().Err(), len(r.Params)}
	})})
	c := ts.dial(t)
	c.send(request(0x1234, FlagKeepConn, testPairs, ""))
	c.response(0x1234)
	assert.Equal(t, seen{0x1234, true, true, nil, 3}, <-got, "body-less request")
	c.send(request(1, 0, nil, "body"))
	c.response(1)
	assert.Equal(t, seen{1, false, false, nil, 0}, <-got, "request with a body")
	c.expectClosed()
}

func TestServerKeepConn(t *testing.T) {
	testsupport.CheckGoroutines(t)
	var calls atomic.Int32
	ts := startServer(t, "tcp", &Server{Handler: HandlerFunc(func(w *ResponseWriter, r *Request) {
		calls.Add(1)
		echo(w, r)
	})})
	c := ts.dial(t)
	c.send(request(1, FlagKeepConn, testPairs, "one"))
	assert.Equal(t, testEcho+"body=one\n", c.response(1).stdout)
	c.send(request(1, FlagKeepConn, []Pair{{"N", "2"}}, ""))
	assert.Equal(t, "N=2\nbody=\n", c.response(1).stdout)
	// Any id will do; the last request drops FCGI_KEEP_CONN.
	c.send(request(9, 0, []Pair{{"N", "3"}}, "three"))
	assert.Equal(t, "N=3\nbody=three\n", c.response(9).stdout)
	c.expectClosed()
	assert.Equal(t, int32(3), calls.Load())
}

// Records arrive in any split the web server likes: params over several
// records, padding, a body in many records.
func TestServerSplitRecords(t *testing.T) {
	testsupport.CheckGoroutines(t)
	ts := startServer(t, "tcp", &Server{Handler: echo})
	c := ts.dial(t)
	p1 := AppendPair(nil, Pair{"A", "1"})
	p2 := AppendPair(nil, Pair{"B", strings.Repeat("b", 200)})
	c.send(
		rec(TypeBeginRequest, 1, []byte{0, 1, FlagKeepConn, 0, 0, 0, 0, 0}, 8),
		rec(TypeParams, 1, p1, 7),
		rec(TypeParams, 1, p2[:3], 0), // a pair split over two records is fine on the way in
		rec(TypeParams, 1, p2[3:], 1),
		rec(TypeParams, 1, nil, 3),
		rec(TypeStdin, 1, []byte("he"), 2),
		rec(TypeStdin, 1, []byte("llo"), 0),
		rec(TypeStdin, 1, nil, 5),
	)
	assert.Equal(t, "A=1\nB="+strings.Repeat("b", 200)+"\nbody=hello\n", c.response(1).stdout)
	// The connection is still in step.
	c.send(request(1, 0, nil, ""))
	assert.Equal(t, "body=\n", c.response(1).stdout)
	c.expectClosed()
}

func TestServerGetValues(t *testing.T) {
	testsupport.CheckGoroutines(t)
	ts := startServer(t, "tcp", &Server{Handler: echo, MaxConns: 7})
	c := ts.dial(t)
	ask := encodePairs([]Pair{{"FCGI_MAX_CONNS", ""}, {"FCGI_MAX_REQS", ""}, {"FCGI_MPXS_CONNS", ""}, {"OTHER", ""}})
	want := string(encodePairs([]Pair{{"FCGI_MAX_CONNS", "7"}, {"FCGI_MAX_REQS", "7"}, {"FCGI_MPXS_CONNS", "0"}}))

	c.send(rec(TypeGetValues, 0, ask, 0))
	rr := c.next()
	assert.Equal(t, TypeGetValuesResult, rr.Type)
	assert.Equal(t, uint16(0), rr.ID)
	if string(rr.Content) != want {
		t.Errorf("got %q; want %q", rr.Content, want)
	}

	// Only what is asked for, in the order asked.
	c.send(rec(TypeGetValues, 0, encodePairs([]Pair{{"FCGI_MPXS_CONNS", ""}}), 0))
	rr = c.next()
	assert.Equal(t, "\x0f\x01FCGI_MPXS_CONNS0", string(rr.Content))

	// Answered in the middle of a request too.
	c.send(beginRec(1, RoleResponder, FlagKeepConn), rec(TypeParams, 1, AppendPair(nil, Pair{"A", "1"}), 0))
	c.send(rec(TypeGetValues, 0, ask, 0))
	rr = c.next()
	assert.Equal(t, TypeGetValuesResult, rr.Type)
	assert.Equal(t, want, string(rr.Content))
	c.send(rec(TypeParams, 1, nil, 0), rec(TypeStdin, 1, nil, 0))
	assert.Equal(t, "A=1\nbody=\n", c.response(1).stdout)

	// The default cap is reported when MaxConns is zero.
	ts2 := startServer(t, "tcp", &Server{Handler: echo})
	c2 := ts2.dial(t)
	c2.send(rec(TypeGetValues, 0, encodePairs([]Pair{{"FCGI_MAX_CONNS", ""}}), 0))
	assert.Equal(t, string(encodePairs([]Pair{{"FCGI_MAX_CONNS", "1024"}})), string(c2.next().Content))
}

func TestServerUnknownType(t *testing.T) {
	testsupport.CheckGoroutines(t)
	ts := startServer(t, "tcp", &Server{Handler: echo})
	c := ts.dial(t)
	for _, typ := range []uint8{0, TypeEndRequest, TypeStdout, TypeUnknownType, 12, 255} {
		c.send(rec(typ, 0, []byte("junk"), 0))
		rr := c.next()
		assert.Equal(t, TypeUnknownType, rr.Type)
		assert.Equal(t, uint16(0), rr.ID)
		if want := string([]byte{typ, 0, 0, 0, 0, 0, 0, 0}); string(rr.Content) != want {
			t.Errorf("type %d: got %q; want %q", typ, rr.Content, want)
		}
	}
	c.send(request(1, 0, nil, "x"))
	assert.Equal(t, "body=x\n", c.response(1).stdout)
}

func TestServerUnknownRole(t *testing.T) {
	testsupport.CheckGoroutines(t)
	var calls atomic.Int32
	ts := startServer(t, "tcp", &Server{Handler: HandlerFunc(func(w *ResponseWriter, r *Request) {
		calls.Add(1)
		echo(w, r)
	})})

	t.Run("authorizer keep-conn", func(t *testing.T) {
		c := ts.dial(t)
		c.send(beginRec(1, RoleAuthorizer, FlagKeepConn), paramsRecs(1, Pair{"A", "1"}), rec(TypeStdin, 1, nil, 0))
		rr := c.next()
		assert.Equal(t, TypeEndRequest, rr.Type)
		assert.Equal(t, uint16(1), rr.ID)
		if want := "\x00\x00\x00\x00\x03\x00\x00\x00"; string(rr.Content) != want {
			t.Errorf("got %q; want %q", rr.Content, want)
		}
		// The refused request's records are skipped; the next one is served.
		c.send(request(1, 0, nil, "ok"))
		assert.Equal(t, "body=ok\n", c.response(1).stdout)
		c.expectClosed()
	})

	t.Run("filter", func(t *testing.T) {
		c := ts.dial(t)
		c.send(beginRec(1, RoleFilter, 0))
		assert.Equal(t, EndRequest{0, StatusUnknownRole}, c.response(1).end)
		c.expectClosed()
	})
	assert.Equal(t, int32(1), calls.Load())
}

// A web server that multiplexes despite FCGI_MPXS_CONNS=0: the second
// request is refused with CANT_MPX_CONN, its records are skipped, and the
// first one is served.
func TestServerCantMpxConn(t *testing.T) {
	testsupport.CheckGoroutines(t)
	var calls atomic.Int32
	ts := startServer(t, "tcp", &Server{Handler: HandlerFunc(func(w *ResponseWriter, r *Request) {
		calls.Add(1)
		echo(w, r)
	})})
	c := ts.dial(t)
	c.send(
		beginRec(1, RoleResponder, FlagKeepConn),
		rec(TypeParams, 1, AppendPair(nil, Pair{"A", "1"}), 0),
		// While request 1 sends its params.
		request(2, FlagKeepConn, []Pair{{"B", "2"}}, "two"),
		rec(TypeParams, 1, nil, 0),
		rec(TypeStdin, 1, []byte("one"), 0),
		// While request 1 sends its body.
		request(3, FlagKeepConn, []Pair{{"C", "3"}}, "three"),
		rec(TypeAbortRequest, 3, nil, 0),
		rec(TypeStdin, 1, nil, 0),
	)
	resps := c.responses(1, 2, 3)
	assert.Equal(t, "A=1\nbody=one\n", resps[1].stdout)
	assert.Equal(t, EndRequest{0, StatusRequestComplete}, resps[1].end)
	for _, id := range []uint16{2, 3} {
		assert.Equal(t, EndRequest{0, StatusCantMpxConn}, resps[id].end, "request %d", id)
		assert.Empty(t, resps[id].stdout, "request %d", id)
	}
	c.send(request(1, 0, nil, ""))
	assert.Equal(t, "body=\n", c.response(1).stdout)
	c.expectClosed()
	assert.Equal(t, int32(2), calls.Load())
	assert.Empty(t, ts.logs.String())
}

func TestServerAbortDuringParams(t *testing.T) {
	testsupport.CheckGoroutines(t)
	var calls atomic.Int32
	ts := startServer(t, "tcp", &Server{Handler: HandlerFunc(func(w *ResponseWriter, r *Request) {
		calls.Add(1)
		echo(w, r)
	})})
	c := ts.dial(t)
	c.send(
		beginRec(1, RoleResponder, FlagKeepConn),
		rec(TypeParams, 1, AppendPair(nil, Pair{"A", "1"}), 0),
		rec(TypeAbortRequest, 1, nil, 0),
	)
	assert.Equal(t, &response{end: EndRequest{0, StatusRequestComplete}}, c.response(1))
	// Late records of the aborted request are skipped.
	c.send(rec(TypeParams, 1, nil, 0), rec(TypeStdin, 1, nil, 0))
	c.send(request(1, 0, nil, "next"))
	assert.Equal(t, "body=next\n", c.response(1).stdout)
	c.expectClosed()
	assert.Equal(t, int32(1), calls.Load())
}

func TestServerMaxParamsBytes(t *testing.T) {
	testsupport.CheckGoroutines(t)
	var calls atomic.Int32
	ts := startServer(t, "tcp", &Server{MaxParamsBytes: 100, Handler: HandlerFunc(func(w *ResponseWriter, r *Request) {
		calls.Add(1)
		echo(w, r)
	})})

	// 100 bytes exactly: 1+1+1+97.
	c := ts.dial(t)
	c.send(request(1, 0, []Pair{{"A", strings.Repeat("v", 97)}}, ""))
	assert.Equal(t, "A="+strings.Repeat("v", 97)+"\nbody=\n", c.response(1).stdout)
	c.expectClosed()
	assert.Empty(t, ts.logs.String())

	// 101 bytes, in two records.
	c = ts.dial(t)
	p := AppendPair(nil, Pair{"A", strings.Repeat("v", 98)})
	c.send(beginRec(1, RoleResponder, FlagKeepConn), rec(TypeParams, 1, p[:50], 0), rec(TypeParams, 1, p[50:], 0),
		rec(TypeParams, 1, nil, 0), rec(TypeStdin, 1, nil, 0))
	c.expectClosed()
	assert.Equal(t, int32(1), calls.Load(), "handler called for params over the limit")
	assert.True(t, testsupport.Eventually(time.Second, func() bool { return strings.Contains(ts.logs.String(), ErrParamsTooLarge.Error()) }),
		"log: got %q; want a line with %q", ts.logs.String(), ErrParamsTooLarge)
}

func TestServerMalformed(t *testing.T) {
	tests := []struct {
		desc  string
		input []byte
		log   string
	}{
		{"truncated header", []byte{1, 1, 0}, ErrTruncated.Error()},
		{"truncated begin", beginRec(1, RoleResponder, 0)[:12], ErrTruncated.Error()},
		{"truncated params", cat(beginRec(1, RoleResponder, 0), rec(TypeParams, 1, []byte("\x01\x01AB"), 0)[:10]), ErrTruncated.Error()},
		{"bad version", []byte{2, 1, 0, 1, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0}, ErrBadVersion.Error()},
		{"short begin body", rec(TypeBeginRequest, 1, []byte{0, 1}, 0), ErrProtocol.Error()},
		{"malformed pair", cat(beginRec(1, RoleResponder, 0), rec(TypeParams, 1, []byte("\x05\x05AB"), 0), rec(TypeParams, 1, nil, 0)), ErrBadParams.Error()},
		{"stdin before params end", cat(beginRec(1, RoleResponder, 0), rec(TypeStdin, 1, nil, 0)), ErrProtocol.Error()},
		{"malformed get values", rec(TypeGetValues, 0, []byte{0x80}, 0), ErrBadParams.Error()},
	}
	for _, tt := range tests {
		for _, network := range []string{"tcp", "unix"} {
			t.Run(tt.desc+"/"+network, func(t *testing.T) {
				testsupport.CheckGoroutines(t)
				ts := startServer(t, network, &Server{Handler: HandlerFunc(func(w *ResponseWriter, r *Request) {
					t.Errorf("handler called")
				})})
				c := ts.dial(t)
				c.send(tt.input)
				c.nc.(interface{ CloseWrite() error }).CloseWrite()
				c.expectClosed()
				assert.True(t, testsupport.Eventually(time.Second, func() bool { return strings.Contains(ts.logs.String(), tt.log) }),
					"log: got %q; want a line with %q", ts.logs.String(), tt.log)
			})
		}
	}
}

func TestServerReadTimeout(t *testing.T) {
	testsupport.CheckGoroutines(t)
	var calls atomic.Int32
	ts := startServer(t, "tcp", &Server{ReadTimeout: 50 * time.Millisecond, Handler: HandlerFunc(func(w *ResponseWriter, r *Request) {
		calls.Add(1)
		echo(w, r)
	})})
	c := ts.dial(t)
	c.send(beginRec(1, RoleResponder, 0))
	c.expectClosed()
	assert.Zero(t, calls.Load())

	// A body that stalls fails the body read.
	c = ts.dial(t)
	c.send(beginRec(1, RoleResponder, 0), paramsRecs(1), rec(TypeStdin, 1, []byte("abc"), 0))
	resp := c.response(1)
	assert.Contains(t, resp.stdout, "body error: ")
	assert.Contains(t, resp.stdout, "timeout")
	c.expectClosed()
}

func TestServerBodyStreaming(t *testing.T) {
	testsupport.CheckGoroutines(t)
	type result struct {
		body   []byte
		chunks []int
		err    error
	}
	got := make(chan result, 1)
	ts := startServer(t, "tcp", &Server{Handler: HandlerFunc(func(w *ResponseWriter, r *Request) {
		var res result
		for {
			chunk, err := r.Body.Next()
			if err != nil {
				if err != io.EOF {
					res.err = err
				}
				break
			}
			res.chunks = append(res.chunks, len(chunk))
			res.body = append(res.body, chunk...)
		}
		fmt.Fprintf(w, "n=%d", len(res.body))
		got <- res
	})})

	const size = 3<<20 + 12345
	body := make([]byte, size)
	for i := range body {
		body[i] = byte(i*31 + i>>11)
	}
	var stream []byte
	var chunks []int
	sizes := []int{MaxContent, 1000, 1, 40000, 65534}
	for off, i := 0, 0; off < size; i++ {
		n := min(sizes[i%len(sizes)], size-off)
		stream = append(stream, rec(TypeStdin, 1, body[off:off+n], i%9)...)
		chunks = append(chunks, n)
		off += n
	}
	c := ts.dial(t)
	c.send(beginRec(1, RoleResponder, FlagKeepConn), paramsRecs(1, Pair{"CONTENT_LENGTH", fmt.Sprint(size)}))
	c.send(stream, rec(TypeStdin, 1, nil, 0))
	assert.Equal(t, fmt.Sprintf("n=%d", size), c.response(1).stdout)
	res := <-got
	require.NoError(t, res.err)
	assert.Equal(t, chunks, res.chunks, "Body.Next hands out one record at a time")
	assert.True(t, string(res.body) == string(body), "body changed in transit")
	// The connection is in step for the next request.
	c.send(request(1, 0, nil, ""))
	c.response(1)
	c.expectClosed()
}

func TestServerBodyRead(t *testing.T) {
	testsupport.CheckGoroutines(t)
	got := make(chan string, 1)
	ts := startServer(t, "tcp", &Server{Handler: HandlerFunc(func(w *ResponseWriter, r *Request) {
		var sb strings.Builder
		buf := make([]byte, 3)
		for {
			n, err := r.Body.Read(buf)
			sb.Write(buf[:n])
			if err != nil {
				fmt.Fprintf(&sb, "|%v", err)
				break
			}
		}
		n, err := r.Body.Read(buf)
		fmt.Fprintf(&sb, "|%d %v", n, err)
		got <- sb.String()
	})})
	c := ts.dial(t)
	c.send(beginRec(1, RoleResponder, 0), paramsRecs(1),
		rec(TypeStdin, 1, []byte("abcdefg"), 0), rec(TypeStdin, 1, []byte("h"), 0), rec(TypeStdin, 1, nil, 0))
	c.response(1)
	assert.Equal(t, "abcdefgh|EOF|0 EOF", <-got)
}

// waitHandler reports the context's cause once it is done, or nil after a
// few seconds.
func waitHandler(started chan<- struct{}, causes chan<- error, readBody bool) Handler {
	return HandlerFunc(func(w *ResponseWriter, r *Request) {
		if readBody {
			if _, err := io.ReadAll(&r.Body); err != nil {
				causes <- fmt.Errorf("reading body: %w", err)
				return
			}
		}
		started <- struct{}{}
		select {
		case <-r.Context().Done():
			causes <- context.Cause(r.Context())
		case <-time.After(5 * time.Second):
			causes <- nil
		}
	})
}

func TestServerAbortMidBody(t *testing.T) {
	testsupport.CheckGoroutines(t)
	type result struct {
		chunk       string
		err, cause  error
		ctxCanceled bool
	}
	got := make(chan result, 1)
	ts := startServer(t, "tcp", &Server{Handler: HandlerFunc(func(w *ResponseWriter, r *Request) {
		var res result
		chunk, err := r.Body.Next()
		res.chunk = string(chunk)
		if err == nil {
			_, res.err = r.Body.Next()
		}
		res.cause = context.Cause(r.Context())
		res.ctxCanceled = r.Context().Err() != nil
		_, again := r.Body.Read(make([]byte, 10))
		if again != res.err {
			res.err = fmt.Errorf("second read: %w", again)
		}
		got <- res
	})})
	c := ts.dial(t)
	c.send(beginRec(1, RoleResponder, FlagKeepConn), paramsRecs(1), rec(TypeStdin, 1, []byte("part"), 0))
	c.send(rec(TypeAbortRequest, 1, nil, 0))
	res := <-got
	assert.Equal(t, "part", res.chunk)
	assert.Equal(t, ErrAborted, res.err)
	assert.Equal(t, ErrAborted, res.cause)
	assert.True(t, res.ctxCanceled)
	assert.Equal(t, EndRequest{0, StatusRequestComplete}, c.response(1).end)
	// The body was not read to its end: the connection cannot carry another
	// request.
	c.expectClosed()
}

func TestServerAbortAfterBody(t *testing.T) {
	for _, tt := range []struct {
		desc     string
		readBody bool
		send     func(c *testClient)
	}{
		// The empty STDIN comes with the params: the watch starts before
		// the handler.
		{"no body", false, func(c *testClient) { c.send(request(1, FlagKeepConn, nil, "")) }},
		// The body ends later: the watch starts when the handler reads its
		// end.
		{"body read by handler", true, func(c *testClient) {
			c.send(beginRec(1, RoleResponder, FlagKeepConn), paramsRecs(1))
			time.Sleep(10 * time.Millisecond)
			c.send(rec(TypeStdin, 1, []byte("data"), 0))
			time.Sleep(10 * time.Millisecond)
			c.send(rec(TypeStdin, 1, nil, 0))
		}},
	} {
		t.Run(tt.desc, func(t *testing.T) {
			testsupport.CheckGoroutines(t)
			started := make(chan struct{}, 1)
			causes := make(chan error, 1)
			mode := waitHandler(started, causes, tt.readBody)
			ts := startServer(t, "tcp", &Server{Handler: HandlerFunc(func(w *ResponseWriter, r *Request) {
				if len(r.Params) > 0 {
					echo(w, r)
					return
				}
				mode.ServeFCGI(w, r)
			})})
			c := ts.dial(t)
			tt.send(c)
			<-started
			c.send(rec(TypeAbortRequest, 1, nil, 0))
			assert.Equal(t, ErrAborted, <-causes)
			assert.Equal(t, EndRequest{0, StatusRequestComplete}, c.response(1).end)
			// The abort is consumed; the connection serves the next request.
			c.send(request(1, 0, []Pair{{"N", "2"}}, ""))
			assert.Equal(t, "N=2\nbody=\n", c.response(1).stdout)
			c.expectClosed()
		})
	}
}

// An abort for another request id, or another record, does not cancel the
// running request.
func TestServerWatchIgnoresOtherRecords(t *testing.T) {
	testsupport.CheckGoroutines(t)
	started := make(chan struct{}, 1)
	causes := make(chan error, 1)
	release := make(chan struct{})
	ts := startServer(t, "tcp", &Server{Handler: HandlerFunc(func(w *ResponseWriter, r *Request) {
		if len(r.Params) > 0 {
			echo(w, r)
			return
		}
		started <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-release:
		}
		causes <- context.Cause(r.Context())
	})})
	c := ts.dial(t)
	c.send(request(1, FlagKeepConn, nil, ""))
	<-started
	c.send(rec(TypeAbortRequest, 2, nil, 0))
	c.expectQuiet(50 * time.Millisecond)
	close(release)
	assert.NoError(t, <-causes)
	c.response(1)
	c.send(request(1, 0, []Pair{{"N", "2"}}, ""))
	assert.Equal(t, "N=2\nbody=\n", c.response(1).stdout)
}

func TestServerClientGone(t *testing.T) {
	testsupport.CheckGoroutines(t)
	started := make(chan struct{}, 1)
	causes := make(chan error, 1)
	ts := startServer(t, "tcp", &Server{Handler: waitHandler(started, causes, false)})
	c := ts.dial(t)
	c.send(request(1, FlagKeepConn, nil, ""))
	<-started
	c.nc.Close()
	cause := <-causes
	if !errors.Is(cause, ErrClientGone) {
		t.Errorf("got %v; want %v", cause, ErrClientGone)
	}
}

func TestServerClientGoneDuringBody(t *testing.T) {
	testsupport.CheckGoroutines(t)
	got := make(chan error, 1)
	ts := startServer(t, "tcp", &Server{Handler: HandlerFunc(func(w *ResponseWriter, r *Request) {
		_, err := io.ReadAll(&r.Body)
		if err == nil {
			err = errors.New("body read whole")
		}
		if !errors.Is(context.Cause(r.Context()), ErrClientGone) {
			err = fmt.Errorf("cause %v", context.Cause(r.Context()))
		}
		got <- err
	})})
	c := ts.dial(t)
	c.send(beginRec(1, RoleResponder, 0), paramsRecs(1), rec(TypeStdin, 1, []byte("abc"), 0), rec(TypeStdin, 1, []byte("de"), 0)[:9])
	time.Sleep(10 * time.Millisecond)
	c.nc.Close()
	assert.ErrorIs(t, <-got, ErrTruncated)

	// Between records, but before the empty STDIN: still a truncated body,
	// never io.EOF, which a body copier takes for the end of the body.
	c = ts.dial(t)
	c.send(beginRec(1, RoleResponder, 0), paramsRecs(1), rec(TypeStdin, 1, []byte("abc"), 0))
	time.Sleep(10 * time.Millisecond)
	c.nc.Close()
	err := <-got
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
	assert.NotErrorIs(t, err, io.EOF)
}

func TestServerStopBody(t *testing.T) {
	testsupport.CheckGoroutines(t)
	type result struct {
		first string
		err   error
		cause error
	}
	got := make(chan result, 1)
	ts := startServer(t, "tcp", &Server{Handler: HandlerFunc(func(w *ResponseWriter, r *Request) {
		// The body is copied on another goroutine while the handler
		// decides it no longer needs it.
		first := make(chan string)
		errc := make(chan error)
		go func() {
			chunk, err := r.Body.Next()
			if err != nil {
				first <- "error: " + err.Error()
			} else {
				first <- string(chunk)
			}
			_, err = r.Body.Next()
			errc <- err
		}()
		res := result{first: <-first}
		time.Sleep(20 * time.Millisecond) // let the reader block
		r.StopBody()
		res.err = <-errc
		res.cause = context.Cause(r.Context())
		w.Write([]byte("answered early"))
		got <- res
	})})
	c := ts.dial(t)
	c.send(beginRec(1, RoleResponder, FlagKeepConn), paramsRecs(1), rec(TypeStdin, 1, []byte("abc"), 0))
	res := <-got
	assert.Equal(t, "abc", res.first)
	assert.ErrorIs(t, res.err, errBodyStopped)
	assert.NoError(t, res.cause, "StopBody is not the web server going away")
	resp := c.response(1)
	assert.Equal(t, "answered early", resp.stdout)
	assert.Equal(t, EndRequest{0, StatusRequestComplete}, resp.end)
	c.expectClosed()
	assert.Empty(t, ts.logs.String())

	// StopBody before any read.
	ts2 := startServer(t, "tcp", &Server{Handler: HandlerFunc(func(w *ResponseWriter, r *Request) {
		r.StopBody()
		_, err := r.Body.Next()
		fmt.Fprintf(w, "%v", err)
	})})
	c = ts2.dial(t)
	c.send(beginRec(1, RoleResponder, FlagKeepConn), paramsRecs(1), rec(TypeStdin, 1, []byte("abc"), 0))
	assert.Equal(t, errBodyStopped.Error(), c.response(1).stdout)
	c.expectClosed()
}

func TestServerResponseWriter(t *testing.T) {
	testsupport.CheckGoroutines(t)
	ts := startServer(t, "tcp", &Server{Handler: HandlerFunc(func(w *ResponseWriter, r *Request) {
		n, err := w.Write(make([]byte, MaxContent+10))
		if err != nil || n != MaxContent+10 {
			panic(fmt.Sprint(n, err))
		}
		w.WriteRecord(TypeStderr, []byte("warn"))
		w.WriteRecord(TypeStdout, nil) // writes nothing
		w.End(3, StatusRequestComplete)
		w.End(4, StatusOverloaded) // ignored
	})})
	c := ts.dial(t)
	c.send(request(1, FlagKeepConn, nil, ""))
	type rd struct {
		typ uint8
		n   int
	}
	var got []rd
	for {
		rr := c.next()
		got = append(got, rd{rr.Type, len(rr.Content)})
		if rr.Type == TypeEndRequest {
			end, _ := ParseEndRequest(rr.Content)
			assert.Equal(t, EndRequest{3, StatusRequestComplete}, end)
			break
		}
	}
	assert.Equal(t, []rd{{TypeStdout, MaxContent}, {TypeStdout, 10}, {TypeStderr, 4}, {TypeStdout, 0}, {TypeEndRequest, 8}}, got)
	c.send(request(1, 0, nil, ""))
	c.response(1)
	c.expectClosed()
}

func TestServerResponseFlush(t *testing.T) {
	testsupport.CheckGoroutines(t)
	next := make(chan struct{})
	ts := startServer(t, "tcp", &Server{Handler: HandlerFunc(func(w *ResponseWriter, r *Request) {
		w.Write([]byte("part1"))
		if err := w.Flush(); err != nil {
			panic(err)
		}
		select {
		case <-next:
		case <-time.After(5 * time.Second):
		}
		w.Write([]byte("part2"))
	})})
	c := ts.dial(t)
	c.send(request(1, 0, nil, ""))
	rr := c.next()
	assert.Equal(t, "part1", string(rr.Content), "flushed before the handler returned")
	close(next)
	assert.Equal(t, "part2", c.response(1).stdout)
	c.expectClosed()
}

func TestServerAbandon(t *testing.T) {
	testsupport.CheckGoroutines(t)
	ts := startServer(t, "tcp", &Server{Handler: HandlerFunc(func(w *ResponseWriter, r *Request) {
		w.Write([]byte("partial"))
		w.Abandon()
		w.Abandon()
		if !errors.Is(w.Err(), errAbandoned) {
			panic(w.Err())
		}
	})})
	c := ts.dial(t)
	c.send(request(1, FlagKeepConn, nil, ""))
	rr := c.next()
	assert.Equal(t, "partial", string(rr.Content))
	c.expectClosed() // no END_REQUEST, despite FCGI_KEEP_CONN
	assert.Empty(t, ts.logs.String())
}

func TestServerHandlerPanic(t *testing.T) {
	testsupport.CheckGoroutines(t)
	ts := startServer(t, "tcp", &Server{Handler: HandlerFunc(func(w *ResponseWriter, r *Request) {
		if len(r.Params) == 0 {
			panic("boom")
		}
		echo(w, r)
	})})
	c := ts.dial(t)
	c.send(request(1, FlagKeepConn, nil, ""))
	c.expectClosed()
	assert.Contains(t, ts.logs.String(), "boom")
	c = ts.dial(t)
	c.send(request(1, 0, []Pair{{"A", "1"}}, ""))
	assert.Equal(t, "A=1\nbody=\n", c.response(1).stdout)
}

func TestServerShutdown(t *testing.T) {
	testsupport.CheckGoroutines(t)
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	ts := startServer(t, "tcp", &Server{Handler: HandlerFunc(func(w *ResponseWriter, r *Request) {
		if len(r.Params) > 0 {
			started <- struct{}{}
			<-release
		}
		w.Write([]byte("done"))
	})})
	busy := ts.dial(t)
	idle := ts.dial(t)
	fresh := ts.dial(t) // connected, never used
	idle.send(request(1, FlagKeepConn, nil, ""))
	assert.Equal(t, "done", idle.response(1).stdout)
	busy.send(request(1, FlagKeepConn, []Pair{{"SLOW", "1"}}, ""))
	<-started

	shut := make(chan error, 1)
	go func() { shut <- ts.Shutdown(context.Background()) }()
	idle.expectClosed()
	fresh.expectClosed()
	assert.ErrorIs(t, ts.wait(), ErrServerClosed)
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	_, err := net.DialTimeout(ts.network, ts.addr, time.Second)
	assert.Error(t, err, "listener still open")

	close(release)
	resp := busy.response(1)
	assert.Equal(t, "done", resp.stdout)
	assert.Equal(t, EndRequest{0, StatusRequestComplete}, resp.end)
	busy.expectClosed() // despite FCGI_KEEP_CONN
	select {
	case err := <-shut:
		assert.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	// Serve after Shutdown refuses at once.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	assert.ErrorIs(t, ts.Serve(l), ErrServerClosed)
}

func TestServerShutdownDeadline(t *testing.T) {
	testsupport.CheckGoroutines(t)
	causes := make(chan error, 1)
	started := make(chan struct{}, 1)
	ts := startServer(t, "tcp", &Server{Handler: waitHandler(started, causes, false)})
	c := ts.dial(t)
	c.send(request(1, FlagKeepConn, nil, ""))
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, ts.Shutdown(ctx), context.DeadlineExceeded)
	// Shutdown gave up and closed the connection under the handler.
	assert.ErrorIs(t, <-causes, ErrClientGone)
	c.expectClosed()
}

func TestServerMaxConns(t *testing.T) {
	testsupport.CheckGoroutines(t)
	ts := startServer(t, "tcp", &Server{Handler: echo, MaxConns: 2})
	getValues := rec(TypeGetValues, 0, encodePairs([]Pair{{"FCGI_MAX_CONNS", ""}}), 0)
	want := string(encodePairs([]Pair{{"FCGI_MAX_CONNS", "2"}}))
	a, b := ts.dial(t), ts.dial(t)
	for _, c := range []*testClient{a, b} {
		c.send(getValues)
		assert.Equal(t, want, string(c.next().Content))
	}
	third := ts.dial(t) // the kernel accepts it; the server does not yet
	third.send(getValues)
	third.expectQuiet(100 * time.Millisecond)
	a.nc.Close()
	assert.Equal(t, want, string(third.next().Content))
	b.send(getValues)
	assert.Equal(t, want, string(b.next().Content))
}

func TestServerIdleTimeout(t *testing.T) {
	testsupport.CheckGoroutines(t)
	ts := startServer(t, "tcp", &Server{Handler: echo, IdleTimeout: 50 * time.Millisecond})
	start := time.Now()
	c := ts.dial(t)
	c.expectClosed()
	assert.GreaterOrEqual(t, time.Since(start), 40*time.Millisecond)

	// Between requests on a kept connection too.
	c = ts.dial(t)
	c.send(request(1, FlagKeepConn, nil, ""))
	c.response(1)
	c.expectClosed()
	// Closing an idle connection is routine, not a failure worth a log line.
	assert.Empty(t, ts.logs.String())
}

func TestServerCloseWhileServing(t *testing.T) {
	testsupport.CheckGoroutines(t)
	started := make(chan struct{}, 1)
	causes := make(chan error, 1)
	ts := startServer(t, "tcp", &Server{Handler: waitHandler(started, causes, false)})
	c := ts.dial(t)
	c.send(request(1, FlagKeepConn, nil, ""))
	<-started
	require.NoError(t, ts.Close())
	assert.ErrorIs(t, <-causes, ErrClientGone)
	c.expectClosed()
	assert.ErrorIs(t, ts.wait(), ErrServerClosed)
}
