package opcache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"
)

// errCalledOff: requests did not finish in time; the reset waits for the
// next eviction.
var errCalledOff = errors.New("opcache: reset called off")

// ResetReport says what a reset did.
type ResetReport struct {
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
	// Held is the requests that waited at incpathd during the pause;
	// PauseSeconds how long new requests were held.
	Held         int64   `json:"held"`
	PauseSeconds float64 `json:"pause_seconds"`
	// Restarted: opcache emptied itself before the pause ended.
	Restarted bool `json:"restarted"`
	// Rewarmed are the releases compiled again before requests went on.
	Rewarmed []string `json:"rewarmed"`
	Error    string   `json:"error,omitempty"`
}

// reset empties opcache with no request running in php-fpm: close the
// gate, wait for the requests in flight (half of MaxPause at most, else it
// is called off), opcache_reset(), make opcache restart on the next call,
// warm the live releases and the ones warmed for activation again, open
// the gate. m.mu is held.
func (m *Manager) reset(ctx context.Context, why string) (*ResetReport, error) {
	rep := &ResetReport{Reason: why, At: time.Now()}
	before, err := m.PHP.OpcacheStatus(ctx, nil)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, m.maxPause())
	defer cancel()
	qctx, qcancel := context.WithTimeout(ctx, m.maxPause()/2)
	held0 := m.Gate.Stats().HeldTotal
	release, err := m.Gate.Quiesce(qctx)
	qcancel()
	if err != nil {
		rep.Error = err.Error()
		m.note(func(s *Stats) { s.ResetsCalledOff++; s.LastReset = rep })
		m.logger().Warn("opcache reset called off: requests still running in php-fpm; the next eviction tries again", "why", why, "err", err)
		return rep, fmt.Errorf("%w: %w", errCalledOff, err)
	}
	err = m.resetQuiet(ctx, before.Restarts(), rep)
	release()
	st := m.Gate.Stats()
	rep.PauseSeconds = st.LastPause.Seconds()
	rep.Held = st.HeldTotal - held0
	if err != nil {
		rep.Error = err.Error()
	}
	m.note(func(s *Stats) {
		s.Resets++
		s.ResetPauseSeconds += rep.PauseSeconds
		s.LastReset = rep
	})
	m.logger().Info("opcache reset with requests held", "why", why, "pause_seconds", rep.PauseSeconds, "held", rep.Held,
		"restarted", rep.Restarted, "rewarmed", rep.Rewarmed, "err", err)
	return rep, err
}

// resetQuiet is the part of reset run with the gate closed.
func (m *Manager) resetQuiet(ctx context.Context, restarts int64, rep *ResetReport) error {
	if err := m.PHP.Reset(ctx); err != nil {
		return err
	}
	// Each call starts a request, and the first that finds none other
	// running restarts opcache.
	for {
		st, err := m.PHP.OpcacheStatus(ctx, nil)
		if err != nil {
			return err
		}
		if st.Restarts() > restarts {
			rep.Restarted = true
			break
		}
		if err := sleep(ctx, 5*time.Millisecond); err != nil {
			return fmt.Errorf("opcache did not restart within the pause (a php-fpm worker still runs a script incpathd does not see, or another pool of the master is busy): %w", err)
		}
	}
	m.forgetGone()
	live := map[string]bool{}
	for _, l := range m.live() {
		live[m.rootOf(l)] = true
	}
	for root, r := range m.known {
		if live[root] || m.inGrace(r) {
			if _, err := m.warmOnce(ctx, root); err != nil {
				return err
			}
			rep.Rewarmed = append(rep.Rewarmed, root)
		}
	}
	return nil
}

// warmOnce compiles root within what is left of ctx, in one call.
func (m *Manager) warmOnce(ctx context.Context, root string) (int, error) {
	budget := warmBudget
	if dl, ok := ctx.Deadline(); ok {
		budget = min(budget, time.Until(dl)-100*time.Millisecond)
	}
	r, err := m.PHP.Warm(ctx, root, max(budget, 100*time.Millisecond))
	if err != nil {
		return 0, err
	}
	return r.Compiled, nil
}

// forgetGone forgets the evicted releases that are gone from disk, once
// opcache has restarted and holds nothing of them.
func (m *Manager) forgetGone() {
	for root, r := range m.known {
		if r.evicted {
			if _, err := os.Stat(root); errors.Is(err, os.ErrNotExist) {
				delete(m.known, root)
			}
		}
	}
}
