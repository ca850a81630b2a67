package fcgi_test

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/internal/fcgibench"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t testing.TB) (a, b net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	a, err = net.Dial("tcp", l.Addr().String())
	require.NoError(t, err)
	b, err = l.Accept()
	require.NoError(t, err)
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func TestRawIOIsUsedForSockets(t *testing.T) {
	a, _ := tcpPair(t)
	assert.True(t, fcgi.IsRawIO(fcgi.NewRawIO(a)), "a TCP connection should get raw system calls")
	p, q := net.Pipe()
	defer p.Close()
	defer q.Close()
	assert.Equal(t, io.ReadWriter(p), fcgi.NewRawIO(p), "a pipe has no descriptor: it is used as it is")
}

// A write larger than the socket buffers waits for the reader, as
// net.Conn's does, and everything arrives in order.
func TestRawIOLargeWriteWaits(t *testing.T) {
	a, b := tcpPair(t)
	ra, rb := fcgi.NewRawIO(a), fcgi.NewRawIO(b)
	data := make([]byte, 16<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	done := make(chan error, 1)
	go func() {
		n, err := ra.Write(data)
		if err == nil && n != len(data) {
			err = io.ErrShortWrite
		}
		done <- err
	}()
	got := make([]byte, 0, len(data))
	buf := make([]byte, 4096)
	for len(got) < len(data) {
		time.Sleep(time.Microsecond) // a slow reader: the writer must wait
		n, err := rb.Read(buf)
		require.NoError(t, err)
		got = append(got, buf[:n]...)
	}
	require.NoError(t, <-done)
	assert.Equal(t, data, got)
}

func TestRawIOEOF(t *testing.T) {
	a, b := tcpPair(t)
	_, err := a.Write([]byte("last"))
	require.NoError(t, err)
	require.NoError(t, a.Close())
	r := fcgi.NewRawIO(b)
	buf := make([]byte, 16)
	n, err := r.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, "last", string(buf[:n]))
	_, err = r.Read(buf)
	assert.Equal(t, io.EOF, err)
}

func TestRawIODeadline(t *testing.T) {
	_, b := tcpPair(t)
	require.NoError(t, b.SetReadDeadline(time.Now().Add(20*time.Millisecond)))
	_, err := fcgi.NewRawIO(b).Read(make([]byte, 16))
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
}

func TestRawIOCloseWakesRead(t *testing.T) {
	_, b := tcpPair(t)
	done := make(chan error, 1)
	go func() {
		_, err := fcgi.NewRawIO(b).Read(make([]byte, 16))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	require.NoError(t, b.Close())
	select {
	case err := <-done:
		assert.ErrorIs(t, err, net.ErrClosed)
	case <-time.After(5 * time.Second):
		t.Fatal("a read blocked on a closed connection did not return")
	}
}

// A peer that reset the connection: the write fails with the errno, which
// callers can test for, and reports what it wrote.
func TestRawIOWriteAfterReset(t *testing.T) {
	a, b := tcpPair(t)
	require.NoError(t, b.(*net.TCPConn).SetLinger(0))
	require.NoError(t, b.Close()) // RST
	r := fcgi.NewRawIO(a)
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for err == nil && time.Now().Before(deadline) {
		_, err = r.Write([]byte("x"))
		time.Sleep(time.Millisecond)
	}
	require.Error(t, err)
	var op *net.OpError
	require.True(t, errors.As(err, &op), "%T", err)
	assert.Equal(t, "write", op.Op)
	assert.Equal(t, a.RemoteAddr(), op.Addr, "the error names the peer, as net.Conn's does")
	assert.True(t, errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE), "%v", err)
}

// BenchmarkLoopbackPingPong is one small write and the read of its echo on
// kept loopback connections, the two calls every request makes on each
// side: through net.Conn, and through rawIO.
func BenchmarkLoopbackPingPong(b *testing.B) {
	for _, bb := range []struct {
		name string
		wrap func(net.Conn) io.ReadWriter
	}{
		{"net.Conn", func(c net.Conn) io.ReadWriter { return c }},
		{"rawIO", fcgi.NewRawIO},
	} {
		b.Run(bb.name, func(b *testing.B) {
			a, c := tcpPair(b)
			go func() {
				echo := bb.wrap(c)
				buf := make([]byte, 512)
				for {
					n, err := echo.Read(buf)
					if err != nil {
						return
					}
					if _, err := echo.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
			rw := bb.wrap(a)
			msg := make([]byte, 512)
			buf := make([]byte, 512)
			b.ReportAllocs()
			cpu := fcgibench.StartCPU()
			for b.Loop() {
				if _, err := rw.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(rw, buf); err != nil {
					b.Fatal(err)
				}
			}
			cpu.Report(b, b.N)
		})
	}
}
