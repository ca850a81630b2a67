package health

import (
	"context"
	"io"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/internal/testenv"
)

// keepOne runs a kept request on a pool connection and puts it back idle:
// php-fpm's worker is then held by it.
func keepOne(t *testing.T, p *fcgi.Pool) {
	t.Helper()
	c, _, err := p.Get(context.Background())
	require.NoError(t, err)
	var out fcgi.Collector
	_, err = c.RoundTrip(context.Background(), &fcgi.Call{KeepConn: true, Params: []fcgi.Pair{
		{Name: "REQUEST_METHOD", Value: "GET"},
		{Name: "SCRIPT_NAME", Value: "/fpm-ping"},
		{Name: "SCRIPT_FILENAME", Value: "/fpm-ping"},
	}}, &out)
	require.NoError(t, err)
	p.Put(c)
}

func TestCheckRealFPM(t *testing.T) {
	// One worker, and the pool's one slot held by an idle kept connection:
	// a check that dialed beside the pool would wait in php-fpm's accept
	// queue until the kept connection closed.
	fpm := testenv.StartFPM(t, testenv.FPMOptions{Children: 1})
	pool := &fcgi.Pool{Address: fpm.Addr, MaxConns: 1}
	defer pool.Close()
	keepOne(t, pool)
	require.Equal(t, 1, pool.Stats().Idle)

	c := &Checker{Pool: pool, Timeout: 3 * time.Second}
	require.NoError(t, c.Check(context.Background()), "FCGI_GET_VALUES")

	ping := &Checker{Pool: pool, PingPath: "/fpm-ping", Timeout: 3 * time.Second}
	require.NoError(t, ping.Check(context.Background()), "ping.path")

	wrong := &Checker{Pool: pool, PingPath: "/fpm-ping", PingResponse: "pang", Timeout: 3 * time.Second}
	err := wrong.Check(context.Background())
	require.ErrorIs(t, err, ErrNotReady)
	assert.Contains(t, err.Error(), `want "pang"`)

	missing := &Checker{Pool: pool, PingPath: "/no-such-ping", Timeout: 3 * time.Second}
	err = missing.Check(context.Background())
	require.ErrorIs(t, err, ErrNotReady)
	assert.Contains(t, err.Error(), "404")

	assert.Equal(t, 0, pool.Stats().Open, "checks give their slot back")

	fpm.Stop()
	err = c.Check(context.Background())
	require.ErrorIs(t, err, ErrNotReady)
	assert.ErrorIs(t, err, fcgi.ErrDial)
}

// Every slot busy past the timeout: not ready, and the check says why.
func TestCheckBusyPool(t *testing.T) {
	fpm := testenv.StartFPM(t, testenv.FPMOptions{Children: 1})
	pool := &fcgi.Pool{Address: fpm.Addr, MaxConns: 1}
	defer pool.Close()
	held, _, err := pool.Get(context.Background())
	require.NoError(t, err)
	defer pool.Discard(held)

	c := &Checker{Pool: pool, Timeout: 200 * time.Millisecond}
	err = c.Check(context.Background())
	require.ErrorIs(t, err, ErrNotReady)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestHandlers(t *testing.T) {
	fpm := testenv.StartFPM(t, testenv.FPMOptions{Children: 1})
	pool := &fcgi.Pool{Address: fpm.Addr, MaxConns: 1}
	defer pool.Close()
	c := &Checker{Pool: pool, Timeout: 3 * time.Second}

	rec := httptest.NewRecorder()
	Live().ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	assert.Equal(t, 200, rec.Code)

	rec = httptest.NewRecorder()
	c.Ready().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	body, _ := io.ReadAll(rec.Body)
	assert.Equal(t, 200, rec.Code, "%s", body)
	assert.Equal(t, "ready\n", string(body))

	fpm.Stop()
	rec = httptest.NewRecorder()
	c.Ready().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	body, _ = io.ReadAll(rec.Body)
	assert.Equal(t, 503, rec.Code)
	assert.Contains(t, string(body), "not ready")
	assert.Contains(t, string(body), fpm.Addr)
}
