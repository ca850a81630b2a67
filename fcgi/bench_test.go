package fcgi

import (
	"bufio"
	"context"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"
)

func BenchmarkDecodeParams(b *testing.B) {
	enc := encodePairs(nginxParams())
	dst := make([]Pair, 0, 64)
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, err = DecodeParams(dst[:0], enc); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWriteParams(b *testing.B) {
	pairs := nginxParams()
	w := NewWriter(bufio.NewWriterSize(io.Discard, 16<<10))
	b.SetBytes(int64(len(encodePairs(pairs))))
	b.ReportAllocs()
	for b.Loop() {
		if err := w.WriteParams(1, pairs); err != nil {
			b.Fatal(err)
		}
		if err := w.Flush(); err != nil {
			b.Fatal(err)
		}
	}
}

// loopReader repeats a stream forever.
type loopReader struct {
	b   []byte
	off int
}

func (r *loopReader) Read(p []byte) (int, error) {
	n := copy(p, r.b[r.off:])
	r.off = (r.off + n) % len(r.b)
	return n, nil
}

func BenchmarkReaderNext(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"empty", 0}, {"100B", 100}, {"4KiB", 4 << 10}, {"64KiB", MaxContent}} {
		b.Run(size.name, func(b *testing.B) {
			var stream []byte
			for len(stream) < 1<<20 {
				stream = append(stream, rec(TypeStdout, 1, make([]byte, size.n), 0)...)
			}
			r := NewReader(&loopReader{b: stream})
			b.SetBytes(int64(HeaderLen + size.n))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := r.Next(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkWatchArmStop is what every request without a body pays for the
// abort watch when it ends before the watch is due: arming and disarming.
func BenchmarkWatchArmStop(b *testing.B) {
	s := &Server{AbortWatchDelay: time.Hour}
	c := &conn{srv: s, watchDone: make(chan struct{}, 1)}
	s.conns = map[*conn]struct{}{c: {}}
	req := &c.req
	b.ReportAllocs()
	for b.Loop() {
		c.armWatch(req)
		c.stopWatch()
	}
}

// BenchmarkPoolWait is what a request pays for waiting in the pool: four
// goroutines take a connection, yield while they hold it, and put it back,
// on a pool of four connections ("free": no Get waits) and of one
// ("waits": every Get waits and every Put hands its connection on). The
// context is an Aborter, as the proxy's is.
func BenchmarkPoolWait(b *testing.B) {
	for _, bc := range []struct {
		name  string
		conns int
	}{{"free", 4}, {"waits", 1}} {
		b.Run(bc.name, func(b *testing.B) {
			u := startUpstream(b, "tcp")
			p := &Pool{Address: u.address(), MaxConns: bc.conns}
			defer p.Close()
			var conns []*Conn
			for range bc.conns { // dialled before the clock starts
				c, _, err := p.Get(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				conns = append(conns, c)
			}
			for _, c := range conns {
				p.Put(c)
			}
			b.SetParallelism(4 / runtime.GOMAXPROCS(0))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				ctx := &benchAborter{Context: context.Background()}
				for pb.Next() {
					c, _, err := p.GetUnchecked(ctx)
					if err != nil {
						b.Error(err)
						return
					}
					runtime.Gosched()
					p.Put(c)
				}
			})
		})
	}
}

// benchAborter is an Aborter, as the proxy's request context is.
type benchAborter struct {
	context.Context
	mu sync.Mutex
	f  func()
}

func (a *benchAborter) OnAbort(f func()) {
	a.mu.Lock()
	a.f = f
	a.mu.Unlock()
}
