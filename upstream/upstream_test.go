package upstream

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fcgi"
)

func pool(name string, check func(context.Context) error) *Pool {
	return &Pool{Name: name, FCGI: &fcgi.Pool{Address: "unix:/nonexistent/" + name + ".sock"}, Check: check}
}

func up(context.Context) error { return nil }

func TestNewSetRefuses(t *testing.T) {
	_, err := NewSet()
	assert.Error(t, err)
	_, err = NewSet(pool("blue", up), pool("blue", up))
	assert.ErrorContains(t, err, `"blue" given twice`)
	_, err = NewSet(&Pool{FCGI: &fcgi.Pool{}})
	assert.Error(t, err)
	s, err := NewSet(pool("blue", up), pool("green", up))
	require.NoError(t, err)
	assert.Equal(t, "blue", s.Active().Name, "the first is active")
}

// Use refuses an unknown pool and one whose check fails, and changes
// nothing then; --force switches to a pool that does not answer.
func TestUse(t *testing.T) {
	s, err := NewSet(pool("blue", up), pool("green", func(context.Context) error { return errors.New("connection refused") }))
	require.NoError(t, err)
	_, err = s.Use(context.Background(), "red", false, time.Second)
	assert.ErrorIs(t, err, ErrUnknown)
	assert.ErrorContains(t, err, "pools: blue, green")
	_, err = s.Use(context.Background(), "green", false, time.Second)
	assert.ErrorIs(t, err, ErrDown)
	assert.ErrorContains(t, err, "connection refused")
	assert.Equal(t, "blue", s.Active().Name)
	prev, err := s.Use(context.Background(), "green", true, time.Second)
	require.NoError(t, err)
	assert.Equal(t, "blue", prev.Name)
	assert.Equal(t, "green", s.Active().Name)
}

// A request keeps the pool it took until it ends: Busy counts it on the
// old pool after a switch, and new requests take the new one.
func TestAcquireAcrossUse(t *testing.T) {
	s, err := NewSet(pool("blue", up), pool("green", up))
	require.NoError(t, err)
	r := s.Acquire()
	assert.Equal(t, "blue", r.Name)
	_, err = s.Use(context.Background(), "green", false, time.Second)
	require.NoError(t, err)
	assert.Equal(t, int64(1), s.Busy())
	n := s.Acquire()
	assert.Equal(t, "green", n.Name)
	assert.Equal(t, int64(1), s.Busy(), "a request on the active pool is not busy elsewhere")
	r.Release()
	assert.Zero(t, s.Busy())
	n.Release()
	st := s.Status()
	assert.Equal(t, []PoolStatus{
		{Name: "blue", Address: "unix:/nonexistent/blue.sock", Requests: 1},
		{Name: "green", Address: "unix:/nonexistent/green.sock", Active: true, Requests: 1},
	}, st)
}

// A Use that comes between a request's reading of the active pool and
// its count on it: the request must not go to the old pool, which Busy,
// read as Use returns, already reported idle.
func TestAcquireRacesUse(t *testing.T) {
	s, err := NewSet(pool("blue", up), pool("green", up))
	require.NoError(t, err)
	var busy int64 = -1
	testHookAcquire = func() {
		testHookAcquire = nil
		_, err := s.Use(context.Background(), "green", false, time.Second)
		require.NoError(t, err)
		busy = s.Busy()
	}
	defer func() { testHookAcquire = nil }()
	p := s.Acquire()
	defer p.Release()
	assert.Zero(t, busy, "the old pool was idle when Use returned")
	assert.Equal(t, "green", p.Name, "the request went to the pool Use had left")
}
