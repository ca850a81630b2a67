package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/health"
	"github.com/incpathd/incpathd/upstream"
)

// upstreamConfig is what the upstream flags decide: the named pools and
// the hold while php-fpm refuses connections.
type upstreamConfig struct {
	upstreams []string // as given: NAME=ADDRESS or ADDRESS
	pools     []namedAddr
	hold      time.Duration
	holdQueue int
}

type namedAddr struct{ name, addr string }

func addUpstreamFlags(fs *pflag.FlagSet, c *upstreamConfig) {
	fs.StringSliceVar(&c.upstreams, "upstream", []string{"127.0.0.1:9000"}, "php-fpm: host:port or unix:/path; NAME=ADDRESS names a pool (repeatable, blue/green: the first is active at start, incpathd upstream use NAME switches)")
	fs.DurationVar(&c.hold, "upstream-hold", 10*time.Second, "while php-fpm refuses connections or is absent (restarting), hold new requests up to this long and serve them once it accepts; 0 fails them at once with 502")
	fs.IntVar(&c.holdQueue, "upstream-hold-queue", 1024, "requests held at once per pool; more get 503 at once")
}

var poolName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$`)

func (c *upstreamConfig) validate() error {
	c.pools = nil
	if len(c.upstreams) == 0 {
		return fmt.Errorf("--upstream: give php-fpm's address")
	}
	for _, u := range c.upstreams {
		name, addr, named := strings.Cut(u, "=")
		if !named {
			name, addr = upstream.DefaultName, u
		}
		switch {
		case !poolName.MatchString(name):
			return fmt.Errorf("--upstream: %q: a pool name is letters, digits, '.', '_' and '-', 32 at most", name)
		case addr == "":
			return fmt.Errorf("--upstream: %q: no address", u)
		case strings.HasPrefix(addr, "unix:") && !strings.HasPrefix(addr, "unix:/"):
			return fmt.Errorf("--upstream: %q: the socket path must be absolute", u)
		}
		for _, p := range c.pools {
			if p.name == name {
				return fmt.Errorf("--upstream: pool %q given twice; name each pool (NAME=ADDRESS)", name)
			}
		}
		c.pools = append(c.pools, namedAddr{name, addr})
	}
	if c.hold < 0 {
		return fmt.Errorf("--upstream-hold: %v is negative", c.hold)
	}
	if c.holdQueue < 1 {
		return fmt.Errorf("--upstream-hold-queue: %d must be at least 1", c.holdQueue)
	}
	return nil
}

// addresses is every pool's address, for the log.
func (c *upstreamConfig) addresses() string {
	var b []string
	for _, p := range c.pools {
		b = append(b, p.name+"="+p.addr)
	}
	return strings.Join(b, ",")
}

// newUpstreams builds one fcgi.Pool per --upstream, each with --max-conns
// of its own and a health check that does not hold.
func newUpstreams(c *config, log *slog.Logger) *upstream.Set {
	var pools []*upstream.Pool
	for _, n := range c.up.pools {
		fp := &fcgi.Pool{
			Address:     n.addr,
			MaxConns:    c.maxConns,
			IdleTimeout: c.upstreamIdleTimeout,
			DialTimeout: c.connectTimeout,
			WaitTimeout: c.queueTimeout,
			Hold:        c.up.hold,
			HoldMax:     c.up.holdQueue,
			Logger:      log.With("pool", n.name),
		}
		checker := &health.Checker{
			Pool:         fp,
			PingPath:     c.ops.upstreamPing,
			PingResponse: c.ops.upstreamPingResponse,
			Timeout:      c.connectTimeout,
		}
		pools = append(pools, &upstream.Pool{
			Name:  n.name,
			FCGI:  fp,
			Check: func(ctx context.Context) error { return checker.Check(fcgi.WithoutHold(ctx)) },
		})
	}
	set, err := upstream.NewSet(pools...)
	if err != nil {
		panic(err) // validate refused what NewSet refuses
	}
	return set
}

// ready answers /readyz for the active pool, without holding: a probe must
// say what it finds.
func ready(set *upstream.Set) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		p := set.Active()
		if err := p.Check(r.Context()); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: pool %s: %v\n", p.Name, err)
			return
		}
		fmt.Fprintln(w, "ready")
	})
}
