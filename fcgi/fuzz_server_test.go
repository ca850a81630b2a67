package fcgi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fuzzPanic is what the fuzz handler panics with when asked to; any other
// panic the server recovers is a bug.
const fuzzPanic = "fuzz handler panic"

// fuzzHandler answers in the way the request's ACTION param asks, so the
// fuzzer reaches every path a handler can take: reading the body or not,
// stopping it, abandoning the response, panicking, waiting for an abort.
var fuzzHandler = HandlerFunc(func(w *ResponseWriter, r *Request) {
	action := ""
	for _, p := range r.Params {
		if p.Name == "ACTION" {
			action = p.Value
		}
	}
	switch action {
	case "ignore":
	case "stop":
		r.Body.Next()
		r.StopBody()
		if _, err := r.Body.Next(); err == nil {
			panic("body read after StopBody succeeded")
		}
	case "abandon":
		w.Write([]byte("Status: 200\r\n\r\npartial"))
		w.Abandon()
		return
	case "panic":
		panic(fuzzPanic)
	case "ctx":
		select {
		case <-r.Context().Done():
		case <-time.After(20 * time.Millisecond):
		}
	case "stderr":
		w.WriteRecord(TypeStderr, []byte("warning"))
	default:
		n, _ := io.Copy(io.Discard, &r.Body)
		w.Write([]byte("Status: 200\r\n\r\n" + strconv.FormatInt(n, 10)))
	}
	w.Write([]byte("Status: 200\r\n\r\nok"))
})

// pairListener accepts the server ends of tcpPair's connections.
var (
	pairOnce     sync.Once
	pairListener net.Listener
	pairErr      error
)

// tcpPair returns both ends of a loopback TCP connection. TCP rather than
// net.Pipe: the server half-closes a connection whose body it did not read
// and lingers until the web server closes too, as a real one does once it
// sees the end of the stream.
func tcpPair() (client, server net.Conn, err error) {
	pairOnce.Do(func() { pairListener, pairErr = net.Listen("tcp", "127.0.0.1:0") })
	if pairErr != nil {
		return nil, nil, pairErr
	}
	client, err = net.Dial("tcp", pairListener.Addr().String())
	if err != nil {
		return nil, nil, err
	}
	server, err = pairListener.Accept()
	if err != nil {
		client.Close()
		return nil, nil, err
	}
	return client, server, nil
}

// oneConnListener hands out one connection, then blocks until closed.
type oneConnListener struct {
	c      chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newOneConnListener(nc net.Conn) *oneConnListener {
	l := &oneConnListener{c: make(chan net.Conn, 1), closed: make(chan struct{})}
	l.c <- nc
	return l
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	select {
	case nc := <-l.c:
		return nc, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *oneConnListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return oneConnAddr{} }

type oneConnAddr struct{}

func (oneConnAddr) Network() string { return "test" }
func (oneConnAddr) String() string  { return "test" }

// panicCatcher is a slog.Handler that keeps the panics the server logs.
type panicCatcher struct {
	mu     sync.Mutex
	panics []string
}

func (h *panicCatcher) Enabled(context.Context, slog.Level) bool { return true }
func (h *panicCatcher) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *panicCatcher) WithGroup(string) slog.Handler            { return h }
func (h *panicCatcher) Handle(_ context.Context, r slog.Record) error {
	if !strings.Contains(r.Message, "panic") {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "panic" {
			h.mu.Lock()
			h.panics = append(h.panics, a.Value.String())
			h.mu.Unlock()
		}
		return true
	})
	return nil
}

// FuzzServer writes arbitrary bytes to a Server connection, as a broken or
// hostile web server could. The server must not panic (a panic it recovers
// other than the handler's own fails the test), must close the connection
// within its timeouts once the input stops (hold: the client keeps its end
// open until the server ends the stream), must answer only with whole, well-formed records, and
// must leave no goroutine behind once closed.
func FuzzServer(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte, hold bool) {
		base := runtime.NumGoroutine()
		client, server, err := tcpPair()
		if err != nil {
			t.Fatal(err)
		}
		logs := &panicCatcher{}
		s := &Server{
			Handler:        fuzzHandler,
			MaxParamsBytes: 4096,
			MaxParams:      64,
			ReadTimeout:    5 * time.Millisecond,
			IdleTimeout:    5 * time.Millisecond,
			Logger:         slog.New(logs),
		}
		l := newOneConnListener(server)
		served := make(chan error, 1)
		go func() { served <- s.Serve(l) }()

		// The client reads everything the server writes until the server
		// closes or half-closes its end (or, without hold, the client closes
		// its own), then closes, as a web server would.
		var out bytes.Buffer
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			io.Copy(&out, client)
			client.Close()
		}()
		// A write fails once the server has closed: fine. One that times out
		// means the server stopped reading without closing.
		client.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := client.Write(data); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("server stopped reading the input\n%s", stacks())
		}
		if !hold {
			client.Close()
		}
		select {
		case <-drained:
		case <-time.After(5 * time.Second):
			t.Fatalf("server kept the connection open 5s after the input ended\n%s", stacks())
		}
		client.Close()
		s.Close()
		select {
		case err := <-served:
			if !errors.Is(err, ErrServerClosed) {
				t.Fatalf("Serve: got %v; want %v", err, ErrServerClosed)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("Serve did not return after Close\n%s", stacks())
		}

		logs.mu.Lock()
		for _, p := range logs.panics {
			if p != fuzzPanic {
				t.Fatalf("server recovered from a panic: %s", p)
			}
		}
		logs.mu.Unlock()

		if hold {
			checkServerOutput(t, out.Bytes())
		}

		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > base {
			if time.Now().After(deadline) {
				t.Fatalf("goroutines: got %d; want at most %d\n%s", runtime.NumGoroutine(), base, stacks())
			}
			time.Sleep(time.Millisecond)
		}
	})
}

// checkServerOutput checks that what a server wrote to a client that never
// hung up is a sequence of whole records of the types a server sends.
func checkServerOutput(t *testing.T, out []byte) {
	r := NewReader(bytes.NewReader(out))
	for {
		h, content, err := r.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("server output: %v\n%q", err, out)
		}
		switch h.Type {
		case TypeStdout, TypeStderr, TypeGetValuesResult, TypeUnknownType:
		case TypeEndRequest:
			if len(content) != 8 {
				t.Fatalf("END_REQUEST of %d bytes", len(content))
			}
		default:
			t.Fatalf("server sent record type %d", h.Type)
		}
		if h.PaddingLength != 0 {
			t.Fatalf("server sent padding")
		}
	}
}

func stacks() []byte {
	buf := make([]byte, 1<<20)
	return buf[:runtime.Stack(buf, true)]
}
