package quiesce

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fcgi"
)

// slowHandler counts the requests running in it and the most at once, and
// runs each for d.
type slowHandler struct {
	d             time.Duration
	running, peak atomic.Int64
	served        atomic.Int64
	duringQuiesce atomic.Int64
	quiet         atomic.Bool
}

func (h *slowHandler) ServeFCGI(*fcgi.ResponseWriter, *fcgi.Request) {
	n := h.running.Add(1)
	if h.quiet.Load() {
		h.duringQuiesce.Add(1)
	}
	for p := h.peak.Load(); n > p && !h.peak.CompareAndSwap(p, n); p = h.peak.Load() {
	}
	time.Sleep(h.d)
	h.running.Add(-1)
	h.served.Add(1)
}

// While quiesced, nothing runs behind the gate; requests that came meanwhile
// are held, then all served; none is lost.
func TestQuiesceHoldsAndReleases(t *testing.T) {
	h := &slowHandler{d: 5 * time.Millisecond}
	g := &Gate{Next: h}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sent atomic.Int64
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				sent.Add(1)
				g.ServeFCGI(nil, nil)
			}
		}()
	}
	for range 5 {
		time.Sleep(20 * time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		release, err := g.Quiesce(ctx)
		cancel()
		require.NoError(t, err)
		h.quiet.Store(true)
		assert.Zero(t, h.running.Load(), "nothing runs while quiesced")
		time.Sleep(20 * time.Millisecond)
		assert.Positive(t, g.Stats().Held, "requests wait at the gate")
		h.quiet.Store(false)
		release()
		release() // a second call does nothing
	}
	close(stop)
	wg.Wait()
	assert.Zero(t, h.duringQuiesce.Load())
	assert.Equal(t, sent.Load(), h.served.Load(), "every request was served")
	st := g.Stats()
	assert.EqualValues(t, 5, st.Pauses)
	assert.Positive(t, st.HeldTotal)
	assert.Zero(t, st.Held)
	assert.Zero(t, st.Overdue)
	assert.False(t, st.Closed)
	assert.GreaterOrEqual(t, st.LastPause, 20*time.Millisecond)
}

// A request that does not finish in time: Quiesce gives up, says how many
// still run, and the gate is open again.
func TestQuiesceTimesOut(t *testing.T) {
	h := &slowHandler{d: 300 * time.Millisecond}
	g := &Gate{Next: h}
	go g.ServeFCGI(nil, nil)
	require.Eventually(t, func() bool { return h.running.Load() == 1 }, 5*time.Second, time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := g.Quiesce(ctx)
	require.ErrorIs(t, err, ErrNotQuiet)
	assert.Contains(t, err.Error(), "1 after")
	assert.False(t, g.Stats().Closed)
	done := make(chan struct{})
	go func() { g.ServeFCGI(nil, nil); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the gate stayed closed")
	}
}

// One Quiesce at a time; a held request goes on after MaxHold.
func TestQuiesceBusyAndMaxHold(t *testing.T) {
	h := &slowHandler{}
	g := &Gate{Next: h, MaxHold: 50 * time.Millisecond}
	release, err := g.Quiesce(context.Background())
	require.NoError(t, err)
	defer release()
	_, err = g.Quiesce(context.Background())
	require.ErrorIs(t, err, ErrBusy)
	start := time.Now()
	g.ServeFCGI(nil, nil)
	assert.GreaterOrEqual(t, time.Since(start), 50*time.Millisecond)
	assert.EqualValues(t, 1, h.served.Load())
	assert.EqualValues(t, 1, g.Stats().Overdue)
}

// An open gate allocates nothing.
func TestOpenGateAllocatesNothing(t *testing.T) {
	g := &Gate{Next: &slowHandler{}}
	assert.Zero(t, testing.AllocsPerRun(100, func() { g.ServeFCGI(nil, nil) }))
}
