package fcgi

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/internal/testsupport"
)

// deadlineCounter is a listener whose connections count the read
// deadlines set on them.
type deadlineCounter struct {
	net.Listener
	calls atomic.Int64
}

func (l *deadlineCounter) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countedConn{Conn: nc, calls: &l.calls}, nil
}

type countedConn struct {
	net.Conn
	calls *atomic.Int64
}

func (c *countedConn) SetReadDeadline(t time.Time) error {
	c.calls.Add(1)
	return c.Conn.SetReadDeadline(t)
}

func (c *countedConn) SetDeadline(t time.Time) error {
	c.calls.Add(1)
	return c.Conn.SetDeadline(t)
}

// A busy kept connection whose requests arrive whole, as every web server
// sends them, moves its read deadline a few times, not on every request:
// each move costs a clock read and a change to the runtime's timer heap.
// The bounds stay: TestServerSlowlorisHead, TestServerIdleTimeout,
// TestServerReadTimeout.
func TestServerDeadlinesNotPerRequest(t *testing.T) {
	testsupport.CheckGoroutines(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	counted := &deadlineCounter{Listener: l}
	// No watch: a request slowed past its delay by a loaded machine would
	// add the watch's deadlines.
	s := &Server{Handler: echo, AbortWatchDelay: time.Hour, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	done := make(chan error, 1)
	go func() { done <- s.Serve(counted) }()
	defer func() {
		s.Close()
		assert.ErrorIs(t, <-done, ErrServerClosed)
	}()
	nc, err := net.Dial("tcp", l.Addr().String())
	require.NoError(t, err)
	defer nc.Close()
	c := &testClient{t: t, nc: nc, r: bufio.NewReader(nc)}
	const n = 200
	for i := range n {
		id := uint16(i + 1)
		c.send(request(id, FlagKeepConn, testPairs, ""))
		assert.Equal(t, testEcho+"body=\n", c.response(id).stdout)
	}
	assert.LessOrEqual(t, counted.calls.Load(), int64(5), "read deadlines set for %d requests", n)
}

func TestReaderHeadBuffered(t *testing.T) {
	head := request(1, 0, testPairs, "")
	params := paramsRecs(1, testPairs...)
	for _, tt := range []struct {
		desc string
		in   []byte
		want bool
	}{
		{"whole request", head, true},
		{"head without the empty STDIN", cat(beginRec(1, RoleResponder, 0), params), true},
		{"params not ended", cat(beginRec(1, RoleResponder, 0), params[:len(params)-HeaderLen]), false},
		{"params cut inside a record", cat(beginRec(1, RoleResponder, 0), params[:HeaderLen+3]), false},
		{"begin request cut", beginRec(1, RoleResponder, 0)[:HeaderLen+2], false},
		{"begin request alone", beginRec(1, RoleResponder, 0), false},
		{"the empty PARAMS of another request", cat(beginRec(1, RoleResponder, 0), rec(TypeParams, 2, nil, 0)), false},
		{"a management record first", cat(rec(TypeGetValues, 0, nil, 0), head), false},
		{"a management record between", cat(beginRec(1, RoleResponder, 0), rec(TypeGetValues, 0, nil, 0), params), true},
		{"padding", cat(beginRec(1, RoleResponder, 0), rec(TypeParams, 1, AppendPair(nil, Pair{"A", "b"}), 5), rec(TypeParams, 1, nil, 3)), true},
		{"bad version", append([]byte{2}, head[1:]...), false},
	} {
		t.Run(tt.desc, func(t *testing.T) {
			r := NewReader(bytes.NewReader(tt.in))
			require.NoError(t, r.wait())
			assert.Equal(t, tt.want, r.headBuffered())
			// Nothing consumed: the records read as they came.
			if tt.want {
				h, _, err := r.Next()
				require.NoError(t, err)
				assert.Equal(t, tt.in[1], h.Type)
			}
		})
	}
}
