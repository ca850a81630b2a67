package proxy

import (
	"bytes"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/internal/fcgitest"
	"github.com/incpathd/incpathd/internal/testsupport"
	"github.com/incpathd/incpathd/pin"
)

// recorder is an Observer that passes on copies of what it is told. The
// web server has its answer before the observer runs, so tests wait for it.
type recorder struct{ done chan Done }

func newRecorder() *recorder { return &recorder{done: make(chan Done, 16)} }

func (r *recorder) RequestDone(d Done) {
	// Done's strings are only valid during the call: keep copies.
	params := make([]fcgi.Pair, len(d.Params))
	for i, p := range d.Params {
		params[i] = fcgi.Pair{Name: strings.Clone(p.Name), Value: strings.Clone(p.Value)}
	}
	d.Params = params
	d.FrontEnd, d.Release = strings.Clone(d.FrontEnd), strings.Clone(d.Release)
	r.done <- d
}

func (r *recorder) next(t *testing.T) Done {
	t.Helper()
	select {
	case d := <-r.done:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("the observer heard of no request")
		return Done{}
	}
}

func TestObserverSeesEveryRequest(t *testing.T) {
	current, release, _ := site(t)
	app := fcgitest.StartApp(t, func(params []fcgi.Pair) []byte {
		if fcgi.Param(params, "QUERY_STRING") == "missing" {
			return []byte("X-Powered-By: PHP\r\nStatus: 404 Not Found\r\nContent-type: text/html\r\n\r\nno such page")
		}
		return []byte("Content-type: text/html\r\n\r\nhello")
	})
	rec := newRecorder()
	var logs testsupport.LogBuffer
	p := &Proxy{
		Pool: &fcgi.Pool{Address: app.Addr},
		Pinner: pin.Pinner{
			Policy: pin.Policy{RealpathList: []string{"*"}},
		},
		Observer: rec,
		Logger:   slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	wc := fcgitest.Dial(t, front(t, p))

	out, err := wc.Get(nginxLike(current))
	require.NoError(t, err)
	assert.Contains(t, string(out), "hello")
	d := rec.next(t)
	assert.Equal(t, 200, d.Status)
	assert.Equal(t, "nginx", d.FrontEnd)
	assert.Equal(t, release, d.Release, "the release the request was pinned to")
	assert.NoError(t, d.Err)
	assert.Positive(t, d.Duration)
	assert.Equal(t, "/index.php?x=1", fcgi.Param(d.Params, "REQUEST_URI"), "the params as the web server sent them")

	params := nginxLike(current)
	params[0].Value = "missing"
	_, err = wc.Get(params)
	require.NoError(t, err)
	assert.Equal(t, 404, rec.next(t).Status, "the application's Status header")

	// A refusal before php-fpm: the proxy's own status and the reason.
	params = nginxLike(filepath.Join(filepath.Dir(current), "nonexistent"))
	out, err = wc.Get(params)
	require.NoError(t, err)
	assert.Contains(t, string(out), "Status: 503")
	d = rec.next(t)
	assert.Equal(t, 503, d.Status)
	assert.ErrorIs(t, d.Err, pin.ErrUnresolvable)
	assert.Equal(t, "", d.Release)

	// php-fpm gone.
	app.Close()
	_, err = wc.Get(nginxLike(current))
	require.NoError(t, err)
	d = rec.next(t)
	assert.Equal(t, 502, d.Status)
	assert.ErrorIs(t, d.Err, fcgi.ErrDial)

	// One access line per request at debug level.
	assert.Equal(t, 4, strings.Count(logs.String(), "msg=request "), "%s", logs.String())
	assert.Contains(t, logs.String(), `msg=request method=GET uri="/index.php?x=1" status=404`)
	assert.Contains(t, logs.String(), "release="+release)
	assert.Contains(t, logs.String(), "frontend=nginx")
}

// Without an Observer and with the debug log off, ServeFCGI does not read
// the clock.
func TestUnobservedRequestIsNotTimed(t *testing.T) {
	p := &Proxy{Logger: slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))}
	var x exchange
	p.begin(&x)
	assert.False(t, x.observed)
	assert.True(t, x.start.IsZero())
	p.Observer = newRecorder()
	p.begin(&x)
	assert.True(t, x.observed)
	assert.False(t, x.start.IsZero())
}

// countingObserver is the cheapest Observer there is: what is left of a
// benchmark with it is the proxy's side of observing (the clock, the status,
// the call).
type countingObserver struct{ n atomic.Uint64 }

func (c *countingObserver) RequestDone(Done) { c.n.Add(1) }

// A whole request over loopback, web server → proxy → application, with and
// without an Observer: the difference is the observer's cost per request
// (metrics.BenchmarkRequestDone measures the metrics' own part).
func BenchmarkServeFCGI(b *testing.B) {
	root := b.TempDir()
	app := fcgitest.StartApp(b, func([]fcgi.Pair) []byte { return []byte("Content-type: text/html\r\n\r\nhello") })
	for _, tc := range []struct {
		name string
		obs  Observer
	}{{"observer=none", nil}, {"observer=counting", &countingObserver{}}} {
		b.Run(tc.name, func(b *testing.B) {
			p := &Proxy{
				Pool: &fcgi.Pool{Address: app.Addr},
				Pinner: pin.Pinner{
					Policy: pin.Policy{DocrootList: []string{"*"}},
				},
				Observer: tc.obs,
				Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
			}
			wc := fcgitest.Dial(b, front(b, p))
			params := nginxLike(root)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := wc.Get(params); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkObserveOverhead(b *testing.B) {
	p := &Proxy{Observer: &countingObserver{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	r := &fcgi.Request{Params: nginxLike("/srv/current")}
	out := []byte("X-Powered-By: PHP/8.2.36\r\nContent-type: text/html; charset=UTF-8\r\n\r\n<html>")
	b.ReportAllocs()
	for b.Loop() {
		var x exchange
		p.begin(&x)
		x.status = fcgi.ResponseStatus(out) // as RoundTrip reads it
		p.finish(r, &x, nil)
	}
}
