package control

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fpmcall"
	"github.com/incpathd/incpathd/opcache"
)

type fakeOpcache struct{ warmErr error }

func (f fakeOpcache) Warm(_ context.Context, dir string) (*opcache.WarmReport, error) {
	if f.warmErr != nil {
		return nil, f.warmErr
	}
	return &opcache.WarmReport{Release: dir, Files: 3, Compiled: 3}, nil
}

func (fakeOpcache) Snapshot(context.Context) *opcache.Snapshot {
	return &opcache.Snapshot{Releases: []opcache.ReleaseState{{Path: "/srv/B", State: opcache.StateLive}}}
}

func serveRoutes(t *testing.T, rt Routes) *Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "c.sock")
	l, err := net.Listen("unix", sock)
	require.NoError(t, err)
	mux := NewMux(func() Status { return Status{Links: []Link{{Docroot: "/srv/current", Target: "/srv/B"}}} })
	rt.Register(mux)
	srv := ServerFor(mux)
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	c := &Client{Addr: "unix:" + sock}
	t.Cleanup(c.Close)
	return c
}

// GET /status gathers every part; POST /opcache/warm answers the report,
// or an error with a status that says whose fault it is.
func TestRoutes(t *testing.T) {
	ctx := context.Background()
	c := serveRoutes(t, Routes{
		Status:   func() Status { return Status{Links: []Link{{Docroot: "/srv/current", Target: "/srv/B"}}} },
		Opcache:  fakeOpcache{},
		Upstream: func() *Upstream { return &Upstream{Address: "unix:/run/php/fpm.sock", MaxConns: 5} },
		InFlight: func() int64 { return 7 },
	})
	v, err := c.View(ctx)
	require.NoError(t, err)
	assert.Equal(t, "/srv/B", v.Releases.Links[0].Target)
	assert.Equal(t, opcache.StateLive, v.Opcache.Releases[0].State)
	assert.Equal(t, "unix:/run/php/fpm.sock", v.Upstream.Address)
	assert.EqualValues(t, 7, v.InFlight)

	rep, err := c.Warm(ctx, "/srv/B", 5*time.Second)
	require.NoError(t, err)
	assert.Equal(t, 3, rep.Compiled)
	_, err = c.Warm(ctx, "relative", 5*time.Second)
	var ce *ClientError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, http.StatusBadRequest, ce.Code)

	for want, werr := range map[int]error{
		http.StatusBadRequest:         fmt.Errorf("%w: /srv/x", opcache.ErrNotDirectory),
		http.StatusServiceUnavailable: fmt.Errorf("%w (the opcache extension is not loaded)", fpmcall.ErrNoOpcache),
	} {
		c := serveRoutes(t, Routes{Opcache: fakeOpcache{warmErr: werr}})
		_, err := c.Warm(ctx, "/srv/x", 5*time.Second)
		require.ErrorAs(t, err, &ce)
		assert.Equal(t, want, ce.Code)
		assert.Equal(t, errors.Is(werr, fpmcall.ErrNoOpcache), NoOpcache(err))
	}

	c = serveRoutes(t, Routes{})
	_, err = c.Warm(ctx, "/srv/B", 5*time.Second)
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, http.StatusNotFound, ce.Code)
	assert.Contains(t, err.Error(), "--opcache=false")
}
