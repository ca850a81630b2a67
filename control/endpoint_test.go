package control

import (
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/upstream"
)

// serveEndpoint serves e on a unix socket until the test ends.
func serveEndpoint(t *testing.T, e *Endpoint) *Client {
	t.Helper()
	addr := "unix:" + filepath.Join(t.TempDir(), "control.sock")
	l, err := Listen(addr, DefaultMode, false)
	require.NoError(t, err)
	srv := e.Server()
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	c := &Client{Addr: addr}
	t.Cleanup(c.Close)
	return c
}

// use refuses an unknown pool (404) and one that does not answer (409),
// switches with force, and every attempt is in the audit with its peer.
func TestEndpointUse(t *testing.T) {
	down := errors.New("connection refused")
	set, err := upstream.NewSet(
		&upstream.Pool{Name: "blue", FCGI: &fcgi.Pool{Address: "unix:/nonexistent/blue.sock"}},
		&upstream.Pool{Name: "green", FCGI: &fcgi.Pool{Address: "unix:/nonexistent/green.sock"}, Check: func(context.Context) error { return down }},
	)
	require.NoError(t, err)
	audit := &Audit{}
	c := serveEndpoint(t, &Endpoint{Status: func() Status { return Status{} }, Upstreams: set, Audit: audit, CheckTimeout: time.Second})

	_, err = c.Use(context.Background(), "red", false)
	assert.ErrorContains(t, err, `no such pool "red"`)
	_, err = c.Use(context.Background(), "green", false)
	assert.ErrorContains(t, err, "does not answer")
	assert.ErrorContains(t, err, "--force")
	assert.Equal(t, "blue", set.Active().Name, "nothing changed")
	res, err := c.Use(context.Background(), "green", true)
	require.NoError(t, err)
	assert.Equal(t, &UseResult{Previous: "blue", Active: "green"}, res)

	acts := audit.Recent()
	require.Len(t, acts, 3)
	assert.Equal(t, []string{"green", "force"}, acts[0].Args, "newest first")
	assert.Equal(t, "blue -> green", acts[0].Result)
	assert.Contains(t, acts[1].Error, "does not answer")
	assert.Contains(t, acts[2].Error, "no such pool")
	for _, a := range acts {
		assert.Equal(t, "upstream use", a.Name)
		assert.GreaterOrEqual(t, a.Peer.UID, 0, "SO_PEERCRED on a unix socket")
		assert.Positive(t, a.Peer.PID)
	}

	u, err := c.Upstreams(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "green", u.Active)
	assert.Len(t, u.Pools, 2)
}

// A bad body is a 400 and changes nothing; GET on /upstreams/use is not
// allowed.
func TestEndpointUseBadRequest(t *testing.T) {
	set, err := upstream.NewSet(&upstream.Pool{Name: "blue", FCGI: &fcgi.Pool{Address: "unix:/x"}})
	require.NoError(t, err)
	c := serveEndpoint(t, &Endpoint{Status: func() Status { return Status{} }, Upstreams: set})
	for _, body := range []string{"", "{}", `{"name": "blue", "extra": 1}`, "not json"} {
		var out UseResult
		err := c.do(context.Background(), "POST", "/upstreams/use", []byte(body), &out)
		assert.ErrorContains(t, err, "want {", "%q", body)
	}
	resp, err := c.client().Get("http://incpathd/upstreams/use")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
}

// The audit keeps the last actions only, and a TCP peer is named by its
// address.
func TestAuditBounded(t *testing.T) {
	a := &Audit{}
	for i := range auditKeep + 5 {
		a.Record(Action{Name: "x", Args: []string{string(rune('a' + i%26))}, Peer: PeerFrom(context.Background())})
	}
	assert.Len(t, a.Recent(), auditKeep)
	assert.Equal(t, "unknown", a.Recent()[0].Peer.String())

	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	go func() {
		c, err := net.Dial("tcp", l.Addr().String())
		if err == nil {
			defer c.Close()
			time.Sleep(100 * time.Millisecond)
		}
	}()
	sc, err := l.Accept()
	require.NoError(t, err)
	defer sc.Close()
	p := PeerFrom(ConnContext(context.Background(), sc))
	assert.Equal(t, -1, p.UID)
	assert.Equal(t, sc.RemoteAddr().String(), p.Remote)
	assert.Equal(t, p.Remote, p.String())
}

// A warm changes what opcache holds: it is in the audit with who asked,
// done or refused.
func TestRoutesAuditWarm(t *testing.T) {
	audit := &Audit{}
	c := serveRoutes(t, Routes{Opcache: fakeOpcache{}, Audit: audit})
	_, err := c.Warm(context.Background(), "/srv/B", 5*time.Second)
	require.NoError(t, err)
	c = serveRoutes(t, Routes{Opcache: fakeOpcache{warmErr: errors.New("opcache is off")}, Audit: audit})
	_, err = c.Warm(context.Background(), "/srv/B", 5*time.Second)
	require.Error(t, err)
	acts := audit.Recent()
	require.Len(t, acts, 2)
	assert.Equal(t, "opcache warm", acts[1].Name)
	assert.Equal(t, []string{"/srv/B"}, acts[1].Args)
	assert.Equal(t, "3 files: 3 compiled, 0 cached", acts[1].Result)
	assert.Contains(t, acts[0].Error, "opcache is off")
	assert.Positive(t, acts[0].Peer.PID, "the peer of the unix socket")
}
