package release

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Concurrent activations and rollbacks of one link, while a reader resolves
// it the way a web server does: the reader never finds the link missing or
// dangling, and after every round the link and its record name releases,
// differ from each other (the lock keeps the record the target the last
// flip replaced), and no temporary link is left behind.
func TestActivateConcurrent(t *testing.T) {
	names := []string{"A", "B", "C", "D"}
	root := newSite(t, names...)
	cur := filepath.Join(root, "current")
	rel := func(n string) string { return filepath.Join(root, "releases", n) }
	var dirs []string
	for _, n := range names {
		dirs = append(dirs, rel(n))
	}
	seed := &Link{Path: cur}
	_, err := seed.Activate(t.Context(), rel("A"))
	require.NoError(t, err)
	_, err = seed.Activate(t.Context(), rel("B"))
	require.NoError(t, err)

	stop := make(chan struct{})
	var reads, bad atomic.Int64
	var badPath atomic.Value
	var reader sync.WaitGroup
	reader.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			p, err := filepath.EvalSymlinks(cur)
			reads.Add(1)
			if err != nil || !slices.Contains(dirs, p) {
				bad.Add(1)
				badPath.Store(p + " " + errString(err))
			}
		}
	})
	stopReader := sync.OnceFunc(func() {
		close(stop)
		reader.Wait()
	})
	defer stopReader()

	const workers, rounds = 8, 50
	for round := range rounds {
		errs := make([]error, workers)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				l := &Link{Path: cur, AllowRoots: []string{filepath.Join(root, "releases")}}
				if w == 0 {
					_, errs[w] = l.Rollback(t.Context())
					return
				}
				_, errs[w] = l.Activate(t.Context(), rel(names[(w+round)%len(names)]))
			})
		}
		wg.Wait()
		for w, err := range errs {
			require.NoError(t, err, "round %d worker %d", round, w)
		}
		now, err := filepath.EvalSymlinks(cur)
		require.NoError(t, err)
		require.Contains(t, dirs, now, "round %d", round)
		prev, err := filepath.EvalSymlinks(cur + PreviousSuffix)
		require.NoError(t, err)
		require.Contains(t, dirs, prev, "round %d", round)
		require.NotEqual(t, now, prev, "round %d: the record names the active release", round)
		ents, err := os.ReadDir(root)
		require.NoError(t, err)
		require.Len(t, ents, 3, "round %d: temporary links left: %v", round, ents)
	}
	stopReader()
	t.Logf("%d activations and rollbacks; the reader resolved the link %d times, %d without finding a release",
		workers*rounds, reads.Load(), bad.Load())
	assert.Zero(t, bad.Load(), "reads that found no release (of %d); last: %v", reads.Load(), badPath.Load())
	assert.Positive(t, reads.Load())
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// An activation waits while another holds the directory's lock. (Only the
// direction that cannot be flaky is timed: a correct lock never lets the
// activation through early, however slow the machine.)
func TestActivateWaitsForLock(t *testing.T) {
	root := newSite(t, "A", "B")
	cur := filepath.Join(root, "current")
	l := &Link{Path: cur}
	_, err := l.Activate(t.Context(), filepath.Join(root, "releases", "A"))
	require.NoError(t, err)

	held, err := lockDir(t.Context(), root, -1)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		_, err := l.Activate(t.Context(), filepath.Join(root, "releases", "B"))
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Activate finished while the lock was held (err %v)", err)
	case <-time.After(200 * time.Millisecond):
	}
	assert.Equal(t, "releases/A", target(t, cur))
	held.unlock()
	require.NoError(t, <-done)
	assert.Equal(t, "releases/B", target(t, cur))
}

// The wait for the lock ends: after LockTimeout, or with the context.
func TestActivateLockWaitEnds(t *testing.T) {
	root := newSite(t, "A", "B")
	cur := filepath.Join(root, "current")
	_, err := (&Link{Path: cur}).Activate(t.Context(), filepath.Join(root, "releases", "A"))
	require.NoError(t, err)
	held, err := lockDir(t.Context(), root, -1)
	require.NoError(t, err)
	defer held.unlock()

	_, err = (&Link{Path: cur, LockTimeout: 50 * time.Millisecond}).Activate(t.Context(), filepath.Join(root, "releases", "B"))
	assert.ErrorIs(t, err, ErrLocked)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err = (&Link{Path: cur, LockTimeout: -1}).Rollback(ctx)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, "releases/A", target(t, cur))
	assertOnly(t, root, "current", "releases")
}
