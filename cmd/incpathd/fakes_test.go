package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fcgi"
)

// fakeUpstream is an in-process FastCGI application standing in for
// php-fpm: it records the params of every request it receives and answers
// as the request's query string asks (see serve). Its Server runs with
// default limits.
type fakeUpstream struct {
	addr string
	srv  *fcgi.Server

	mu       sync.Mutex
	reqs     []map[string]string
	n        int  // requests received
	aborts   int  // requests whose context ended while they slept
	keepNone bool // count requests without keeping their params
}

func startFakeUpstream(t testing.TB) *fakeUpstream {
	t.Helper()
	u := &fakeUpstream{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	u.addr = l.Addr().String()
	u.srv = &fcgi.Server{
		Handler:        fcgi.HandlerFunc(u.serve),
		MaxParams:      1 << 20,
		MaxParamsBytes: 16 << 20,
		// incpathd resets the connections it gives up on: routine here.
		Logger: slog.New(slog.DiscardHandler),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		u.srv.Serve(l)
	}()
	t.Cleanup(func() {
		u.srv.Close()
		<-done
	})
	return u
}

// serve answers one request. QUERY_STRING may hold, '&'-separated:
// bytes=N (a body of N bytes), sleep=D (wait D first, or until the web
// server aborts), fail (close the connection without END_REQUEST after a
// first record), stderr (one STDERR record), echo (the request body's
// length).
func (u *fakeUpstream) serve(w *fcgi.ResponseWriter, r *fcgi.Request) {
	// Params are only valid during the call: the map keeps copies.
	params := make(map[string]string, len(r.Params))
	for _, p := range r.Params {
		params[strings.Clone(p.Name)] = strings.Clone(p.Value)
	}
	u.mu.Lock()
	u.n++
	if !u.keepNone {
		u.reqs = append(u.reqs, params)
	}
	u.mu.Unlock()

	var size int
	var sleep time.Duration
	var fail, stderr, echo bool
	for _, kv := range strings.Split(params["QUERY_STRING"], "&") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "bytes":
			size, _ = strconv.Atoi(v)
		case "sleep":
			sleep, _ = time.ParseDuration(v)
		case "fail":
			fail = true
		case "stderr":
			stderr = true
		case "echo":
			echo = true
		}
	}
	n, _ := io.Copy(io.Discard, &r.Body)
	if sleep > 0 {
		t := time.NewTimer(sleep)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			u.mu.Lock()
			u.aborts++
			u.mu.Unlock()
			return
		}
	}
	if stderr {
		w.WriteRecord(fcgi.TypeStderr, []byte("PHP Warning: from the fake upstream"))
	}
	fmt.Fprintf(w, "Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n")
	if echo {
		fmt.Fprintf(w, "body=%d\n", n)
	}
	if fail {
		w.Flush()
		w.Abandon()
		return
	}
	chunk := strings.Repeat("x", 32<<10)
	for size > 0 {
		k := min(size, len(chunk))
		if _, err := w.Write([]byte(chunk[:k])); err != nil {
			return
		}
		size -= k
	}
}

// requests returns the params of every request received so far.
func (u *fakeUpstream) requests() []map[string]string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]map[string]string(nil), u.reqs...)
}

// count returns how many requests were received.
func (u *fakeUpstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.n
}

// forgetParams stops keeping the params of later requests.
func (u *fakeUpstream) forgetParams() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.keepNone = true
}

// aborted returns how many requests ended because the proxy went away.
func (u *fakeUpstream) aborted() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.aborts
}

// fcgiClient plays the web server on one connection with raw records.
type fcgiClient struct {
	t  testing.TB
	nc net.Conn
	r  *fcgi.Reader
}

func dialFCGI(t testing.TB, addr string) *fcgiClient {
	t.Helper()
	c, err := dialFCGINoCleanup(t, addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.nc.Close() })
	return c
}

// dialFCGINoCleanup is dialFCGI for a caller that closes every connection
// itself: a soak's hundred thousand clean-ups would pile up until the end.
func dialFCGINoCleanup(t testing.TB, addr string) (*fcgiClient, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &fcgiClient{t: t, nc: nc, r: fcgi.NewReader(nc)}, nil
}

// encodeRequest encodes a whole request: BEGIN_REQUEST, params (split into
// records of at most 65535 bytes, pairs spanning records as the protocol
// allows), the body and the end of STDIN.
func encodeRequest(keep bool, params []fcgi.Pair, body []byte) []byte {
	var b bytes.Buffer
	bw := bufio.NewWriter(&b)
	w := fcgi.NewWriter(bw)
	flags := uint8(0)
	if keep {
		flags = fcgi.FlagKeepConn
	}
	w.WriteBeginRequest(1, fcgi.RoleResponder, flags)
	var enc []byte
	for _, p := range params {
		enc = fcgi.AppendPair(enc, p)
	}
	if len(enc) > 0 {
		w.WriteRecord(fcgi.TypeParams, 1, enc) // splits at MaxContent
	}
	w.WriteRecord(fcgi.TypeParams, 1, nil)
	if len(body) > 0 {
		w.WriteRecord(fcgi.TypeStdin, 1, body)
	}
	w.WriteRecord(fcgi.TypeStdin, 1, nil)
	w.Flush()
	return b.Bytes()
}

// send writes a whole request.
func (c *fcgiClient) send(keep bool, params []fcgi.Pair, body []byte) error {
	c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := c.nc.Write(encodeRequest(keep, params, body))
	return err
}

// result is what came back for one request.
type result struct {
	stdout, stderr string
	status         int  // from the Status: line, 200 if none
	ended          bool // END_REQUEST arrived
	closed         bool // the connection ended first
	err            error
}

// read reads one response until END_REQUEST, the connection's end, or
// timeout.
func (c *fcgiClient) read(timeout time.Duration) result {
	var res result
	var out strings.Builder
	c.nc.SetReadDeadline(time.Now().Add(timeout))
	defer c.nc.SetReadDeadline(time.Time{})
	for {
		h, content, err := c.r.Next()
		if err != nil {
			res.closed = err == io.EOF || errors.Is(err, net.ErrClosed) || isReset(err)
			if !res.closed {
				res.err = err
			}
			break
		}
		switch h.Type {
		case fcgi.TypeStdout:
			out.Write(content)
		case fcgi.TypeStderr:
			res.stderr += string(content)
		case fcgi.TypeEndRequest:
			res.ended = true
		}
		if res.ended {
			break
		}
	}
	res.stdout = out.String()
	res.status = 200
	if rest, ok := strings.CutPrefix(res.stdout, "Status: "); ok && len(rest) >= 3 {
		res.status, _ = strconv.Atoi(rest[:3])
	}
	return res
}

// roundTrip sends a body-less request and reads its answer.
func (c *fcgiClient) roundTrip(keep bool, params []fcgi.Pair) result {
	c.t.Helper()
	if err := c.send(keep, params, nil); err != nil {
		return result{err: err, closed: true}
	}
	return c.read(10 * time.Second)
}

func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

// baseParams are what nginx sends for GET /index.php?query with root
// docroot, the way internal/testenv configures it.
func baseParams(docroot, query string) []fcgi.Pair {
	return []fcgi.Pair{
		{Name: "SCRIPT_FILENAME", Value: docroot + "/index.php"},
		{Name: "QUERY_STRING", Value: query},
		{Name: "REQUEST_METHOD", Value: "GET"},
		{Name: "SCRIPT_NAME", Value: "/index.php"},
		{Name: "REQUEST_URI", Value: "/index.php?" + query},
		{Name: "DOCUMENT_ROOT", Value: docroot},
		{Name: "SERVER_SOFTWARE", Value: "nginx/1.22.1"},
		{Name: "REMOTE_ADDR", Value: "127.0.0.1"},
	}
}

// withParam returns params with name set to value, replacing it if present.
func withParam(params []fcgi.Pair, name, value string) []fcgi.Pair {
	out := append([]fcgi.Pair(nil), params...)
	for i := range out {
		if out[i].Name == name {
			out[i].Value = value
			return out
		}
	}
	return append(out, fcgi.Pair{Name: name, Value: value})
}
