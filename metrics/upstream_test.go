package metrics

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/upstream"
)

// Each named pool is reported under its own label: which is active, its
// requests, and its hold while its php-fpm is absent.
func TestExportPools(t *testing.T) {
	down := func(name string) *upstream.Pool {
		return &upstream.Pool{Name: name, FCGI: &fcgi.Pool{
			Address: "unix:" + filepath.Join(t.TempDir(), "absent.sock"),
			Hold:    100 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)}}
	}
	set, err := upstream.NewSet(down("blue"), down("green"))
	require.NoError(t, err)
	defer set.Close()
	p := set.Acquire()
	_, _, err = p.FCGI.Get(context.Background())
	require.ErrorIs(t, err, fcgi.ErrHoldTimeout)
	p.Release()
	_, err = set.Use(context.Background(), "green", true, time.Second)
	require.NoError(t, err)

	out := scrape(t, New(Sources{Upstreams: set}))
	for _, want := range []string{
		`incpathd_upstream_active{pool="blue"} 0`,
		`incpathd_upstream_active{pool="green"} 1`,
		`incpathd_upstream_requests_total{pool="blue"} 1`,
		`incpathd_upstream_requests_total{pool="green"} 0`,
		`incpathd_upstream_requests_in_flight{pool="blue"} 0`,
		`incpathd_upstream_down{pool="blue"} 1`,
		`incpathd_upstream_down{pool="green"} 0`,
		`incpathd_upstream_held_total{pool="blue"} 1`,
		`incpathd_upstream_hold_timeouts_total{pool="blue"} 1`,
		`incpathd_upstream_held_requests{pool="blue"} 0`,
		`incpathd_upstream_connections{pool="green",state="idle"} 0`,
	} {
		assert.Contains(t, out, want)
	}
	assert.Regexp(t, `incpathd_upstream_hold_seconds_total\{pool="blue"\} 0\.[1-9]`, out)
}
