// Package fcgitest holds the FastCGI helpers tests share: a fake FastCGI
// application on loopback (App) and a raw client that plays the web server
// (Client). Both read and write records with package fcgi's Reader and
// Writer; the byte-level tests of those live in fcgi itself and do not use
// this package.
package fcgitest

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/incpathd/incpathd/fcgi"
)

// App is a FastCGI application on loopback that answers every request
// with the bytes Answer returns, on kept connections: a php-fpm that costs
// nothing, for tests and benchmarks of what sits in front of it.
type App struct {
	// Addr is the address it listens on, "127.0.0.1:port".
	Addr string

	answer   func(params []fcgi.Pair) []byte
	srv      *fcgi.Server // for StartHandler
	params   [][]fcgi.Pair
	l        net.Listener
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	requests int
}

// StartApp starts an App that answers with answer's STDOUT, and stops it
// when the test ends. answer runs on the connection's goroutine; the params
// are valid only during the call.
func StartApp(tb testing.TB, answer func(params []fcgi.Pair) []byte) *App {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	a := &App{Addr: l.Addr().String(), answer: answer, l: l, conns: map[net.Conn]struct{}{}}
	a.wg.Add(1)
	go a.acceptLoop()
	tb.Cleanup(a.Close)
	return a
}

// StartHandler starts an App that runs h, on an fcgi.Server, for every
// request, and keeps a copy of each request's params (Params); it is
// stopped when the test ends. It costs more than StartApp, but h answers as
// it likes: STDERR, statuses, a body read or not, a connection dropped.
func StartHandler(tb testing.TB, h fcgi.HandlerFunc) *App {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	a := &App{Addr: l.Addr().String(), l: l}
	a.srv = &fcgi.Server{Handler: fcgi.HandlerFunc(func(w *fcgi.ResponseWriter, r *fcgi.Request) {
		a.record(r.Params)
		h(w, r)
	}), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.srv.Serve(l)
	}()
	tb.Cleanup(a.Close)
	return a
}

// record counts a request and keeps a copy of its params: they are valid
// only while the handler runs.
func (a *App) record(params []fcgi.Pair) {
	got := make([]fcgi.Pair, len(params))
	for i, p := range params {
		got[i] = fcgi.Pair{Name: strings.Clone(p.Name), Value: strings.Clone(p.Value)}
	}
	a.mu.Lock()
	a.requests++
	a.params = append(a.params, got)
	a.mu.Unlock()
}

// Params returns the params of every request a StartHandler App received,
// in order.
func (a *App) Params() [][]fcgi.Pair {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([][]fcgi.Pair(nil), a.params...)
}

// Requests returns how many requests the App has answered.
func (a *App) Requests() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.requests
}

func (a *App) acceptLoop() {
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

// serveConn answers requests on one connection until it fails.
func (a *App) serveConn(c net.Conn) {
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
			if !a.respond(w, h.ID, params) || bw.Flush() != nil {
				return
			}
		}
	}
}

// respond writes the answer to one request whose params are in params.
func (a *App) respond(w *fcgi.Writer, id uint16, params []byte) bool {
	pairs, err := fcgi.DecodeParams(nil, params)
	if err != nil {
		return false
	}
	a.mu.Lock()
	a.requests++
	a.mu.Unlock()
	if out := a.answer(pairs); len(out) > 0 {
		w.WriteRecord(fcgi.TypeStdout, id, out)
	}
	w.WriteRecord(fcgi.TypeStdout, id, nil)
	w.WriteEndRequest(id, 0, fcgi.StatusRequestComplete)
	return true
}

// Close stops the App and closes its connections; it is safe to call more
// than once.
func (a *App) Close() {
	if a.srv != nil {
		a.srv.Close()
	}
	a.l.Close()
	a.mu.Lock()
	for c := range a.conns {
		c.Close()
	}
	a.mu.Unlock()
	a.wg.Wait()
}

// StartRaw starts an application that hands each connection to serve, with
// its number from 0, and closes it when serve returns: for an application
// that misbehaves in ways StartApp and StartHandler cannot (a connection
// closed before the answer, records after END_REQUEST). It is stopped when
// the test ends, after every serve has returned. It returns the address.
func StartRaw(tb testing.TB, serve func(n int, c net.Conn)) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	tb.Cleanup(func() { l.Close(); wg.Wait() })
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

// ReadRequest reads one request from r up to the empty STDIN record that
// ends it, and returns its id and params: for a StartRaw application.
func ReadRequest(r *fcgi.Reader) (id uint16, params []fcgi.Pair, err error) {
	var b []byte
	for {
		h, content, err := r.Next()
		if err != nil {
			return 0, nil, err
		}
		switch h.Type {
		case fcgi.TypeBeginRequest:
			id = h.ID
		case fcgi.TypeParams:
			b = append(b, content...)
		case fcgi.TypeStdin:
			if len(content) > 0 {
				continue
			}
			params, err := fcgi.DecodeParams(nil, b)
			return id, params, err
		}
	}
}
