package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/incpathd/incpathd/fcgi"
)

// fakeApp is a FastCGI application on loopback that answers every request
// with the bytes answer returns, on kept connections.
type fakeApp struct {
	addr     string
	answer   func(params []fcgi.Pair) []byte
	l        net.Listener
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	requests int
}

func startFakeApp(tb testing.TB, answer func([]fcgi.Pair) []byte) *fakeApp {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	a := &fakeApp{addr: l.Addr().String(), answer: answer, l: l, conns: map[net.Conn]struct{}{}}
	a.wg.Add(1)
	go a.acceptLoop()
	tb.Cleanup(a.close)
	return a
}

func (a *fakeApp) acceptLoop() {
	defer a.wg.Done()
	for {
		c, err := a.l.Accept()
		if err != nil {
			return
		}
		a.mu.Lock()
		a.conns[c] = struct{}{}
		a.mu.Unlock()
		a.wg.Add(1)
		go a.serveConn(c)
	}
}

func (a *fakeApp) serveConn(c net.Conn) {
	defer a.wg.Done()
	defer c.Close()
	r := fcgi.NewReader(c)
	bw := bufio.NewWriter(c)
	w := fcgi.NewWriter(bw)
	var params []byte
	for {
		h, content, err := r.Next()
		if err != nil {
			return
		}
		switch h.Type {
		case fcgi.TypeBeginRequest:
			params = params[:0]
		case fcgi.TypeParams:
			params = append(params, content...)
		case fcgi.TypeStdin:
			if len(content) > 0 {
				continue
			}
			pairs, err := fcgi.DecodeParams(nil, params)
			if err != nil {
				return
			}
			a.mu.Lock()
			a.requests++
			a.mu.Unlock()
			if out := a.answer(pairs); len(out) > 0 {
				w.WriteRecord(fcgi.TypeStdout, h.ID, out)
			}
			w.WriteRecord(fcgi.TypeStdout, h.ID, nil)
			w.WriteEndRequest(h.ID, 0, fcgi.StatusRequestComplete)
			if w.Flush() != nil {
				return
			}
		}
	}
}

func (a *fakeApp) close() {
	a.l.Close()
	a.mu.Lock()
	for c := range a.conns {
		c.Close()
	}
	a.mu.Unlock()
	a.wg.Wait()
}

// serveProxy runs p behind an fcgi.Server on loopback until the test ends
// and returns its address.
func serveProxy(tb testing.TB, p *Proxy) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &fcgi.Server{Handler: p}
	done := make(chan struct{})
	go func() { srv.Serve(l); close(done) }()
	tb.Cleanup(func() {
		srv.Close()
		<-done
		p.Pool.Close()
	})
	return l.Addr().String()
}

// webClient plays the web server: one kept connection, one request at a
// time.
type webClient struct {
	c  net.Conn
	r  *fcgi.Reader
	bw *bufio.Writer
	w  *fcgi.Writer
}

func dialWeb(tb testing.TB, addr string) *webClient {
	tb.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	bw := bufio.NewWriter(c)
	return &webClient{c: c, r: fcgi.NewReader(c), bw: bw, w: fcgi.NewWriter(bw)}
}

// do sends a body-less request and returns its STDOUT.
func (wc *webClient) do(params []fcgi.Pair) ([]byte, error) {
	wc.c.SetDeadline(time.Now().Add(10 * time.Second))
	wc.w.WriteBeginRequest(1, fcgi.RoleResponder, fcgi.FlagKeepConn)
	if err := wc.w.WriteParams(1, params); err != nil {
		return nil, err
	}
	wc.w.WriteRecord(fcgi.TypeStdin, 1, nil)
	if err := wc.w.Flush(); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	for {
		h, content, err := wc.r.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return out.Bytes(), err
		}
		switch h.Type {
		case fcgi.TypeStdout:
			out.Write(content)
		case fcgi.TypeEndRequest:
			return out.Bytes(), nil
		}
	}
}

// nginxLike are the params nginx sends for GET /index.php?x=1 under root.
func nginxLike(root string) []fcgi.Pair {
	return []fcgi.Pair{
		{Name: "QUERY_STRING", Value: "x=1"},
		{Name: "REQUEST_METHOD", Value: "GET"},
		{Name: "CONTENT_TYPE", Value: ""},
		{Name: "CONTENT_LENGTH", Value: ""},
		{Name: "SCRIPT_NAME", Value: "/index.php"},
		{Name: "REQUEST_URI", Value: "/index.php?x=1"},
		{Name: "DOCUMENT_URI", Value: "/index.php"},
		{Name: "DOCUMENT_ROOT", Value: root},
		{Name: "SERVER_PROTOCOL", Value: "HTTP/1.1"},
		{Name: "GATEWAY_INTERFACE", Value: "CGI/1.1"},
		{Name: "SERVER_SOFTWARE", Value: "nginx/1.22.1"},
		{Name: "REMOTE_ADDR", Value: "127.0.0.1"},
		{Name: "REMOTE_PORT", Value: "40000"},
		{Name: "SERVER_ADDR", Value: "127.0.0.1"},
		{Name: "SERVER_PORT", Value: "80"},
		{Name: "SERVER_NAME", Value: "localhost"},
		{Name: "REDIRECT_STATUS", Value: "200"},
		{Name: "SCRIPT_FILENAME", Value: root + "/index.php"},
		{Name: "HTTP_HOST", Value: "localhost"},
		{Name: "HTTP_USER_AGENT", Value: "test"},
	}
}
