// Package fcgibench drives FastCGI servers for benchmarks: NullApp, an
// application server that answers every request at once, and Client and
// Load, which play a web server on kept connections. Both are as cheap as the
// fcgi codec allows, so that what a benchmark measures between them is the
// proxy in the middle.
package fcgibench

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"strconv"
	"sync"

	"github.com/incpathd/incpathd/fcgi"
)

// ResponseBytesParam, sent with a decimal value N, makes NullApp answer with
// N bytes of STDOUT after the headers instead of its fixed response.
const ResponseBytesParam = "NULLAPP_RESPONSE_BYTES"

// DefaultResponse is the answer of a hello-world PHP script as php-fpm
// sends it.
var DefaultResponse = []byte("Content-type: text/html; charset=UTF-8\r\n\r\nHello, world!\n")

// NullApp is a FastCGI application server that answers every responder
// request as soon as its body has been read and thrown away. It honours
// FCGI_KEEP_CONN and, like php-fpm, serves one request at a time per
// connection.
type NullApp struct {
	// Response is the STDOUT of every answer. If nil, DefaultResponse.
	Response []byte

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]struct{}
	closed    bool
	wg        sync.WaitGroup
}

// ErrClosed is returned by NullApp.Serve after Close.
var ErrClosed = errors.New("fcgibench: closed")

// Serve accepts connections on l until Close.
func (a *NullApp) Serve(l net.Listener) error {
	if !a.track(l, nil, true) {
		l.Close()
		return ErrClosed
	}
	defer a.track(l, nil, false)
	for {
		nc, err := l.Accept()
		if err != nil {
			if a.isClosed() {
				return ErrClosed
			}
			return err
		}
		if !a.track(nil, nc, true) {
			nc.Close()
			return ErrClosed
		}
		a.wg.Add(1)
		go a.serveConn(nc)
	}
}

// Close stops the listeners, closes every connection and waits for their
// goroutines.
func (a *NullApp) Close() error {
	a.mu.Lock()
	a.closed = true
	for l := range a.listeners {
		l.Close()
	}
	for c := range a.conns {
		c.Close()
	}
	a.mu.Unlock()
	a.wg.Wait()
	return nil
}

func (a *NullApp) isClosed() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.closed
}

func (a *NullApp) track(l net.Listener, c net.Conn, add bool) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if add && a.closed {
		return false
	}
	if a.listeners == nil {
		a.listeners = make(map[net.Listener]struct{})
		a.conns = make(map[net.Conn]struct{})
	}
	switch {
	case l != nil && add:
		a.listeners[l] = struct{}{}
	case l != nil:
		delete(a.listeners, l)
	case add:
		a.conns[c] = struct{}{}
	default:
		delete(a.conns, c)
	}
	return true
}

// serveConn is the goroutine of one connection.
func (a *NullApp) serveConn(nc net.Conn) {
	defer a.wg.Done()
	defer a.track(nil, nc, false)
	defer nc.Close()
	resp := a.Response
	if resp == nil {
		resp = DefaultResponse
	}
	r := fcgi.NewReader(nc)
	bw := bufio.NewWriterSize(nc, 16<<10)
	w := fcgi.NewWriter(bw)
	var (
		keep  bool
		extra int64 = -1
	)
	for {
		h, content, err := r.Next()
		if err != nil {
			return
		}
		switch h.Type {
		case fcgi.TypeBeginRequest:
			br, err := fcgi.ParseBeginRequest(content)
			if err != nil {
				return
			}
			keep, extra = br.Flags&fcgi.FlagKeepConn != 0, -1
		case fcgi.TypeParams:
			// Only decode params that name the size: most requests do not,
			// and decoding would cost them an allocation.
			if bytes.Contains(content, []byte(ResponseBytesParam)) {
				extra = responseBytes(content)
			}
		case fcgi.TypeStdin:
			if len(content) > 0 {
				continue
			}
			if extra >= 0 {
				err = writeBytes(w, h.ID, extra)
			} else {
				err = w.WriteRecord(fcgi.TypeStdout, h.ID, resp)
			}
			w.WriteRecord(fcgi.TypeStdout, h.ID, nil)
			w.WriteEndRequest(h.ID, 0, fcgi.StatusRequestComplete)
			if err == nil {
				err = w.Flush()
			}
			if err != nil || !keep {
				return
			}
		case fcgi.TypeGetValues:
			w.WriteRecord(fcgi.TypeGetValuesResult, 0, fcgi.AppendPair(nil, fcgi.Pair{Name: "FCGI_MPXS_CONNS", Value: "0"}))
			if w.Flush() != nil {
				return
			}
		}
	}
}

func responseBytes(content []byte) int64 {
	pairs, err := fcgi.DecodeParams(nil, content)
	if err != nil {
		return -1
	}
	for _, p := range pairs {
		if p.Name == ResponseBytesParam {
			n, err := strconv.ParseInt(p.Value, 10, 64)
			if err == nil && n >= 0 {
				return n
			}
		}
	}
	return -1
}

// zeros is the content of large bodies and responses.
var zeros = make([]byte, fcgi.MaxContent)

// writeBytes writes a header block and n bytes of STDOUT, in full records.
func writeBytes(w *fcgi.Writer, id uint16, n int64) error {
	if err := w.WriteRecord(fcgi.TypeStdout, id, []byte("Content-Type: application/octet-stream\r\n\r\n")); err != nil {
		return err
	}
	for n > 0 {
		k := min(n, int64(len(zeros)))
		if err := w.WriteRecord(fcgi.TypeStdout, id, zeros[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}
