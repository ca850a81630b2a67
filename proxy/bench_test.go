package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/internal/fcgibench"
	"github.com/incpathd/incpathd/pin"
	"github.com/incpathd/incpathd/rewrite"
	upstreams "github.com/incpathd/incpathd/upstream"
)

// benchSite is a docroot symlink, current -> releases/A, made once.
func benchSite(b *testing.B) string {
	b.Helper()
	root, err := filepath.EvalSymlinks(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "releases", "A"), 0o755); err != nil {
		b.Fatal(err)
	}
	current := filepath.Join(root, "current")
	if err := os.Symlink("releases/A", current); err != nil {
		b.Fatal(err)
	}
	return current
}

// benchProxy is the Proxy incpathd runs with its default flags plus an
// include_path, so every request is pinned and carries one.
func benchProxy(pool *fcgi.Pool) *Proxy {
	return &Proxy{
		Pool: pool,
		Pinner: pin.Pinner{
			Policy:   pin.Policy{RealpathList: []string{"*"}},
			Resolver: &pin.Resolver{Every: time.Hour},
			Rewrite:  rewrite.Config{IncludePath: ".:/usr/share/php"},
		},
		Logger: quietLogger(),
	}
}

// BenchmarkRewritePath is what a request's params cost incpathd: the PARAMS
// stream of a 30-param nginx request decoded (in place, as fcgi.Server
// does), pinned as ServeFCGI pins (front end, policy, cached docroot
// resolution, rewrite; no release tracker or observer, as with the default
// flags) and encoded for php-fpm, reusing the buffers the server and the
// proxy reuse.
//
// The "defaults" case adds what the pool's own values, learned at start,
// make of a stock pool: every other pinned key sent as "" on each request.
func BenchmarkRewritePath(b *testing.B) {
	b.Run("include_path", func(b *testing.B) { benchRewritePath(b, nil) })
	b.Run("defaults", func(b *testing.B) {
		benchRewritePath(b, []rewrite.Setting{{Key: "open_basedir"}, {Key: "auto_prepend_file"}, {Key: "auto_append_file"}})
	})
}

func benchRewritePath(b *testing.B, defaults []rewrite.Setting) {
	current := benchSite(b)
	params := fcgibench.NginxParams(current)
	var enc []byte
	for _, p := range params {
		enc = fcgi.AppendPair(enc, p)
	}
	p := benchProxy(nil)
	p.Pinner.Rewrite.Defaults = defaults
	w := fcgi.NewWriter(bufio.NewWriterSize(io.Discard, 16<<10))
	in := make([]fcgi.Pair, 0, 64)
	out := make([]fcgi.Pair, 0, 64)
	var buf []byte
	raw := unsafe.String(&enc[0], len(enc)) // the stream, as fcgi.Request.RawParams
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	cpu := fcgibench.StartCPU()
	for b.Loop() {
		var err error
		if in, err = fcgi.DecodeParamsInPlace(in[:0], enc); err != nil {
			b.Fatal(err)
		}
		var x exchange
		p.begin(&x)
		pinned, err := p.Pinner.Pin(out[:0], buf, in)
		if err != nil {
			b.Fatal(err)
		}
		p.count(&pinned)
		pinned.Done()
		out, buf = pinned.Params, pinned.Buf
		if err := w.WriteParamsFrom(1, out, raw); err != nil {
			b.Fatal(err)
		}
		if err := w.Flush(); err != nil {
			b.Fatal(err)
		}
	}
	cpu.Report(b, b.N)
	if p.Pinner.Resolver.Resolutions() != 1 {
		b.Fatalf("%d resolutions; want 1: the docroot should stay cached", p.Pinner.Resolver.Resolutions())
	}
}

// benchStack is a web server's connections to fcgi.Server + Proxy +
// fcgi.Pool on loopback, in front of an upstream that answers at once; all
// connections kept alive.
type benchStack struct {
	addr string
	req  []byte
}

func startBenchStack(b *testing.B, conns int, watchDelay time.Duration) *benchStack {
	b.Helper()
	ul, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var app fcgibench.NullApp
	go app.Serve(ul)
	b.Cleanup(func() { app.Close() })

	pool := &fcgi.Pool{Address: ul.Addr().String(), MaxConns: conns, Hold: 10 * time.Second}
	p := benchProxy(pool)
	// As the daemon runs it: the pool taken from a set, held while down.
	if p.Upstreams, err = upstreams.NewSet(&upstreams.Pool{Name: "default", FCGI: pool}); err != nil {
		b.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &fcgi.Server{Handler: p, Logger: p.Logger, AbortWatchDelay: watchDelay}
	go srv.Serve(l)
	b.Cleanup(func() {
		srv.Shutdown(context.Background())
		pool.Close()
	})
	req, err := fcgibench.EncodeRequest(fcgibench.NginxParams(benchSite(b)), false)
	if err != nil {
		b.Fatal(err)
	}
	return &benchStack{addr: l.Addr().String(), req: req}
}

func (s *benchStack) dial(b *testing.B) *fcgibench.Client {
	c, err := fcgibench.Dial(s.addr)
	if err != nil {
		b.Fatal(err)
	}
	return c
}

func (s *benchStack) do(c *fcgibench.Client) error {
	res, err := c.Do(s.req, 0)
	if err != nil {
		return err
	}
	if res.Stdout != int64(len(fcgibench.DefaultResponse)) {
		return fmt.Errorf("got %d bytes of stdout %q; want %d", res.Stdout, res.Head, len(fcgibench.DefaultResponse))
	}
	return nil
}

// BenchmarkProxy is the whole proxy path, one request at a time on one kept
// connection: its time per op is the latency of a request through
// incpathd (client and upstream included), its allocations and CPU time
// those of the client, the server, the proxy and the upstream together.
// "watch-at-once" starts the watch for aborts as soon as the body has been
// read, as the server did before AbortWatchDelay: the difference is what
// that watch costs a request.
func BenchmarkProxy(b *testing.B) {
	for _, bb := range []struct {
		name  string
		delay time.Duration
	}{{"default", 0}, {"watch-at-once", -1}} {
		b.Run(bb.name, func(b *testing.B) {
			s := startBenchStack(b, 1, bb.delay)
			c := s.dial(b)
			defer c.Close()
			// Dial the upstream, fill the resolver cache.
			if err := s.do(c); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			cpu := fcgibench.StartCPU()
			for b.Loop() {
				if err := s.do(c); err != nil {
					b.Fatal(err)
				}
			}
			cpu.Report(b, b.N)
		})
	}
}

// BenchmarkProxyParallel is the whole proxy path under load: as many kept
// web server connections as RunParallel has goroutines.
func BenchmarkProxyParallel(b *testing.B) {
	s := startBenchStack(b, 64, 0)
	b.SetParallelism(4)
	b.ReportAllocs()
	cpu := fcgibench.StartCPU()
	defer func() { cpu.Report(b, b.N) }()
	b.RunParallel(func(pb *testing.PB) {
		c, err := fcgibench.Dial(s.addr)
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		for pb.Next() {
			if err := s.do(c); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
