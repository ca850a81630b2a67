// Package health answers liveness and readiness probes: /healthz says the
// process is up, /readyz that php-fpm answers a FastCGI round trip.
package health

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/incpathd/incpathd/fcgi"
)

// ErrNotReady wraps every readiness failure.
var ErrNotReady = errors.New("health: upstream not ready")

// Checker checks that the application server answers.
type Checker struct {
	// Pool is the upstream. Checks take one of its slots, so they never
	// open more connections than MaxConns (php-fpm holds a worker for each);
	// when every slot stays busy past Timeout, the check fails.
	Pool *fcgi.Pool
	// PingPath, if not empty, makes the check a real request for this path,
	// php-fpm's ping.path, whose body must be PingResponse. If empty, the
	// check is an FCGI_GET_VALUES round trip, which needs no php-fpm
	// configuration.
	PingPath string
	// PingResponse is the body PingPath must answer, blanks around it
	// ignored. If empty, "pong", php-fpm's default ping.response.
	PingResponse string
	// Timeout bounds one check, from waiting for a slot to the answer. If
	// zero, 5s.
	Timeout time.Duration

	semOnce sync.Once
	sem     chan struct{} // one check at a time
}

func (c *Checker) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return 5 * time.Second
}

func (c *Checker) pingResponse() string {
	if c.PingResponse != "" {
		return c.PingResponse
	}
	return "pong"
}

// maxAnswer bounds what a check reads from the application.
const maxAnswer = 64 << 10

// Check runs one round trip on a freshly dialed upstream connection. Checks
// run one at a time: a burst of probes takes one slot, not many.
func (c *Checker) Check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	c.semOnce.Do(func() { c.sem = make(chan struct{}, 1) })
	select {
	case c.sem <- struct{}{}:
		defer func() { <-c.sem }()
	case <-ctx.Done():
		return fmt.Errorf("%w: another check is still running: %w", ErrNotReady, ctx.Err())
	}
	conn, err := c.Pool.Fresh(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotReady, err)
	}
	// php-fpm closes the connection after GET_VALUES, and the ping request
	// does not ask to keep it: never reused.
	defer c.Pool.Discard(conn)
	if c.PingPath != "" {
		err = c.ping(ctx, conn)
	} else {
		_, err = conn.GetValues(ctx, "FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS")
	}
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrNotReady, c.Pool.Address, err)
	}
	return nil
}

// ping requests PingPath and checks the answer.
func (c *Checker) ping(ctx context.Context, conn *fcgi.Conn) error {
	call := fcgi.Call{Params: []fcgi.Pair{
		{Name: "GATEWAY_INTERFACE", Value: "CGI/1.1"},
		{Name: "SERVER_SOFTWARE", Value: "incpathd"},
		{Name: "SERVER_PROTOCOL", Value: "HTTP/1.1"},
		{Name: "SERVER_NAME", Value: "localhost"},
		{Name: "REMOTE_ADDR", Value: "127.0.0.1"},
		{Name: "REQUEST_METHOD", Value: "GET"},
		{Name: "QUERY_STRING", Value: ""},
		{Name: "REQUEST_URI", Value: c.PingPath},
		{Name: "DOCUMENT_URI", Value: c.PingPath},
		{Name: "SCRIPT_NAME", Value: c.PingPath},
		{Name: "SCRIPT_FILENAME", Value: c.PingPath},
	}}
	out := fcgi.Collector{Max: maxAnswer}
	res, err := conn.RoundTrip(ctx, &call, &out)
	if err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	return c.checkPong(res.Status, out.Stdout)
}

// checkPong checks a CGI response: no error status, the expected body.
func (c *Checker) checkPong(status int, out []byte) error {
	_, body, ok := fcgi.CutHeaders(out)
	if !ok {
		return fmt.Errorf("ping answer without headers: %q", clip(out))
	}
	if status != 200 {
		return fmt.Errorf("ping %s answered status %d", c.PingPath, status)
	}
	if got := strings.TrimSpace(string(body)); got != c.pingResponse() {
		return fmt.Errorf("ping %s answered %q, want %q (is ping.path set in the pool?)", c.PingPath, clip([]byte(got)), c.pingResponse())
	}
	return nil
}

func clip(b []byte) []byte {
	if len(b) > 200 {
		return b[:200]
	}
	return b
}

// Live answers /healthz: 200 while the process can answer at all.
func Live() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		fmt.Fprintln(w, "ok")
	})
}

// Ready answers /readyz: 200 when Check passes, else 503 with the reason.
func (c *Checker) Ready() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if err := c.Check(r.Context()); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %v\n", err)
			return
		}
		fmt.Fprintln(w, "ready")
	})
}
