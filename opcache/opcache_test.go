package opcache

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/fpmcall"
	"github.com/incpathd/incpathd/quiesce"
)

// fakePHP is opcache in miniature: scripts per release, a hash table of
// maxKeys that only a reset empties, and a file count per release.
type fakePHP struct {
	mu          sync.Mutex
	files       map[string]int // PHP files per release
	cached      map[string]int
	keys        int
	maxKeys     int
	restarts    int64
	pending     bool
	tooNew      int // files reported too new on the next warm calls
	invalidated []string
	warms       []string
	onReset     func()
}

func (f *fakePHP) OpcacheStatus(_ context.Context, roots []string) (*fpmcall.OpcacheStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pending {
		f.pending = false
		f.restarts++
		f.keys = 0
		f.cached = map[string]int{}
	}
	st := &fpmcall.OpcacheStatus{Keys: int64(f.keys), MaxKeys: int64(f.maxKeys), ManualRestarts: f.restarts,
		FreeMemory: 1 << 30, Releases: map[string]fpmcall.Usage{}}
	st.Config.FileUpdateProtection = 2
	st.Config.ValidateTimestamps = true
	for r, n := range f.cached {
		st.Releases[r] = fpmcall.Usage{Scripts: int64(n), Bytes: int64(n) * 1000}
	}
	return st, nil
}

func (f *fakePHP) Warm(_ context.Context, root string, _ time.Duration) (*fpmcall.WarmResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.warms = append(f.warms, root)
	n := f.files[root]
	r := &fpmcall.WarmResult{Files: n, Cached: f.cached[root]}
	if f.tooNew > 0 {
		r.TooNew, r.Wait = f.tooNew, 0.05
		f.tooNew = 0
		return r, nil
	}
	for f.cached[root] < n {
		if f.keys >= f.maxKeys {
			r.NotCached++
			n--
			continue
		}
		f.keys++
		f.cached[root]++
		r.Compiled++
	}
	return r, nil
}

func (f *fakePHP) Invalidate(_ context.Context, root string) (fpmcall.Usage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.invalidated = append(f.invalidated, root)
	return fpmcall.Usage{Scripts: int64(f.cached[root])}, nil
}

func (f *fakePHP) Reset(context.Context) error {
	f.mu.Lock()
	f.pending = true
	cb := f.onReset
	f.mu.Unlock()
	if cb != nil {
		cb()
	}
	return nil
}

type nothing struct{}

func (nothing) ServeFCGI(*fcgi.ResponseWriter, *fcgi.Request) {}

// site makes release directories on disk.
func site(t *testing.T, names ...string) map[string]string {
	root := t.TempDir()
	out := map[string]string{}
	for _, n := range names {
		p := filepath.Join(root, n)
		require.NoError(t, os.Mkdir(p, 0o755))
		out[n] = p
	}
	return out
}

type liveSet struct {
	mu   sync.Mutex
	live []string
	busy map[string][]string
}

func (l *liveSet) Live() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.live...)
}
func (l *liveSet) Busy(r string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.busy[r]
}
func (l *liveSet) set(live ...string) { l.mu.Lock(); l.live = live; l.mu.Unlock() }

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// A release is evicted only once it is neither live nor busy on two checks
// in a row; a warmed release waiting for its flip is never evicted; when
// the hash table has no room for another live-sized release, opcache is
// reset with the gate closed and the live release warmed again.
func TestManagerEvictsAndResets(t *testing.T) {
	dirs := site(t, "A", "B", "C")
	php := &fakePHP{files: map[string]int{dirs["A"]: 40, dirs["B"]: 40, dirs["C"]: 40}, cached: map[string]int{}, maxKeys: 100}
	ls := &liveSet{live: []string{dirs["A"]}, busy: map[string][]string{}}
	gate := &quiesce.Gate{Next: nothing{}}
	var closedDuringReset bool
	php.onReset = func() { closedDuringReset = gate.Stats().Closed }
	m := &Manager{PHP: php, Gate: gate, Live: ls.Live, Busy: ls.Busy, Logger: quiet()}
	ctx := context.Background()

	_, err := m.Warm(ctx, dirs["A"])
	require.NoError(t, err)
	m.Check(ctx)
	rep, err := m.Warm(ctx, dirs["B"])
	require.NoError(t, err)
	assert.Equal(t, 40, rep.Compiled)
	m.Check(ctx)
	m.Check(ctx)
	assert.Empty(t, php.invalidated, "B is warmed and waits for its flip; A is live")

	ls.set(dirs["B"])
	ls.busy[dirs["A"]] = []string{"1 request in flight"}
	m.Check(ctx)
	m.Check(ctx)
	assert.Empty(t, php.invalidated, "A is busy")
	delete(ls.busy, dirs["A"])
	m.Check(ctx)
	assert.Empty(t, php.invalidated, "one check is not enough")
	m.Check(ctx)
	assert.Equal(t, []string{dirs["A"]}, php.invalidated)
	// 80 of 100 slots used, B holds 40: no room for another like it.
	assert.EqualValues(t, 1, m.Stats().Resets)
	assert.EqualValues(t, 1, php.restarts)
	assert.True(t, closedDuringReset, "the reset ran with the gate closed")
	assert.False(t, gate.Stats().Closed)
	assert.Equal(t, 40, php.cached[dirs["B"]], "the live release was warmed again")
	assert.Zero(t, php.cached[dirs["A"]])
}

// A warm that finds files too new waits and tries again; one that finds
// opcache full resets it and goes on.
func TestManagerWarmWaitsAndMakesRoom(t *testing.T) {
	dirs := site(t, "A", "B")
	php := &fakePHP{files: map[string]int{dirs["A"]: 60, dirs["B"]: 60}, cached: map[string]int{}, maxKeys: 150, tooNew: 3}
	ls := &liveSet{live: []string{dirs["A"]}}
	m := &Manager{PHP: php, Gate: &quiesce.Gate{Next: nothing{}}, Live: ls.Live, Logger: quiet()}
	rep, err := m.Warm(context.Background(), dirs["A"])
	require.NoError(t, err)
	assert.Equal(t, 60, rep.Compiled)
	assert.Zero(t, rep.TooNew)
	assert.Positive(t, rep.Waited)
	assert.NotEmpty(t, rep.Notes)

	// A deleted release still holds 50 slots: 40 left for B's 60.
	php.keys += 50
	php.cached["/gone"] = 50
	rep, err = m.Warm(context.Background(), dirs["B"])
	require.NoError(t, err)
	require.NotNil(t, rep.Reset, "no room for B: reset")
	assert.Equal(t, 60, rep.Compiled, "B whole after the reset")
	assert.Zero(t, rep.NotCached)
	assert.Equal(t, []string{dirs["A"]}, rep.Reset.Rewarmed)

	_, err = m.Warm(context.Background(), filepath.Join(dirs["A"], "missing"))
	assert.ErrorIs(t, err, ErrNotDirectory)
}

// A request that does not finish calls the reset off: opcache is left as it
// is, the gate opens, and the call-off is counted.
func TestManagerResetCalledOff(t *testing.T) {
	dirs := site(t, "A")
	php := &fakePHP{files: map[string]int{dirs["A"]: 10}, cached: map[string]int{}, maxKeys: 100}
	block := make(chan struct{})
	gate := &quiesce.Gate{Next: blocker(block)}
	go gate.ServeFCGI(nil, nil)
	defer close(block)
	require.Eventually(t, func() bool { return gate.InFlight() == 1 }, 5*time.Second, time.Millisecond)
	m := &Manager{PHP: php, Gate: gate, MaxPause: 200 * time.Millisecond, Logger: quiet()}
	m.mu.Lock()
	rep, err := m.reset(context.Background(), "test")
	m.mu.Unlock()
	require.ErrorIs(t, err, errCalledOff)
	assert.Contains(t, rep.Error, "requests still in flight")
	assert.Zero(t, php.restarts)
	assert.EqualValues(t, 1, m.Stats().ResetsCalledOff)
	assert.False(t, gate.Stats().Closed)
}

type blocker chan struct{}

func (b blocker) ServeFCGI(*fcgi.ResponseWriter, *fcgi.Request) { <-b }
