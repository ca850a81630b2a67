package fcgibench

import (
	"context"
	"net"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fcgi"
)

func startNull(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var app NullApp
	served := make(chan error, 1)
	go func() { served <- app.Serve(l) }()
	t.Cleanup(func() {
		app.Close()
		assert.ErrorIs(t, <-served, ErrClosed)
	})
	return l.Addr().String()
}

func TestNullAppAnswers(t *testing.T) {
	// Registered first, so it runs after every other clean-up. Polled by
	// hand: assert.Eventually runs its condition on a goroutine of its own.
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		assert.LessOrEqual(t, runtime.NumGoroutine(), before, "goroutines left")
	})
	addr := startNull(t)
	c, err := Dial(addr)
	require.NoError(t, err)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))

	hello, err := EncodeRequest(NginxParams("/srv/www"), false)
	require.NoError(t, err)
	// Kept alive: one connection, several requests.
	for range 3 {
		res, err := c.Do(hello, 0)
		require.NoError(t, err)
		assert.Equal(t, string(DefaultResponse), string(res.Head))
		assert.Equal(t, int64(len(DefaultResponse)), res.Stdout)
		assert.Equal(t, fcgi.EndRequest{ProtocolStatus: fcgi.StatusRequestComplete}, res.End)
	}

	// A body is read whole; the answer has the size asked for.
	const size = 3*fcgi.MaxContent + 7
	params := append(NginxParams("/srv/www"), fcgi.Pair{Name: ResponseBytesParam, Value: strconv.Itoa(size)})
	post, err := EncodeRequest(params, true)
	require.NoError(t, err)
	res, err := c.Do(post, size)
	require.NoError(t, err)
	head := "Content-Type: application/octet-stream\r\n\r\n"
	assert.Equal(t, int64(len(head)+size), res.Stdout)
	assert.Equal(t, head, string(res.Head[:len(head)]))

	res, err = c.Do(hello, 0)
	require.NoError(t, err, "the connection is still in step")
	assert.Equal(t, int64(len(DefaultResponse)), res.Stdout)
}

func TestLoad(t *testing.T) {
	addr := startNull(t)
	l := Load{Addr: addr, Conns: 3, Requests: 50}
	res, err := l.Run(context.Background())
	require.NoError(t, err)
	assert.Equal(t, uint64(150), res.Requests)
	assert.Zero(t, res.Errors)
	assert.Len(t, res.Latencies, 150)
	assert.Equal(t, int64(150*len(DefaultResponse)), res.StdoutBytes)
	assert.LessOrEqual(t, res.Percentile(0.5), res.Percentile(0.99))
	assert.Positive(t, res.Rate())

	// A server that is not there is an error, not a result.
	l = Load{Addr: "127.0.0.1:1", Requests: 1}
	_, err = l.Run(context.Background())
	assert.Error(t, err)
}

func TestLoadDuration(t *testing.T) {
	addr := startNull(t)
	l := Load{Addr: addr, Conns: 2, Duration: 200 * time.Millisecond, Warmup: 50 * time.Millisecond}
	res, err := l.Run(context.Background())
	require.NoError(t, err)
	assert.Positive(t, res.Requests)
	assert.Zero(t, res.Errors, "the requests cut off at the end are not errors: %v", res.FirstError)
}
