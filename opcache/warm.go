package opcache

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/incpathd/incpathd/fpmcall"
)

// WarmReport says what a warm did.
type WarmReport struct {
	Release string `json:"release"`
	// Files are the .php files below the release; Compiled were compiled
	// by this warm, Cached were in opcache already.
	Files    int `json:"files"`
	Compiled int `json:"compiled"`
	Cached   int `json:"cached"`
	// Skipped files, by reason: TooNew (younger than
	// opcache.file_update_protection even after waiting), Failed (do not
	// compile), NotCached (opcache kept no copy: full, or blacklisted).
	TooNew    int      `json:"too_new"`
	Failed    int      `json:"failed"`
	NotCached int      `json:"not_cached"`
	Errors    []string `json:"errors,omitempty"`
	// Notes explain the skipped files and settings that matter.
	Notes []string `json:"notes,omitempty"`
	// Waited is how long the warm waited for files to be older than
	// opcache.file_update_protection, in seconds.
	Waited  float64 `json:"waited_seconds"`
	Seconds float64 `json:"seconds"`
	// Reset is the reset made to find room, if one was.
	Reset *ResetReport `json:"reset,omitempty"`
}

// maxTooNewWait bounds how long a warm waits for freshly built files.
const maxTooNewWait = 10 * time.Second

// warmBudget is the time one warm call may take in PHP before it answers
// and is called again: below php-fpm's usual request_terminate_timeout.
const warmBudget = 20 * time.Second

// Warm compiles every PHP file of dir into opcache. It waits (up to 10 s)
// for files younger than opcache.file_update_protection, which opcache
// would not cache, and makes room with a reset when opcache is full (only
// with a Gate). The report says what it compiled, what it skipped and why.
func (m *Manager) Warm(ctx context.Context, dir string) (*WarmReport, error) {
	root, err := realDir(dir)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	start := time.Now()
	rep, err := m.warm(ctx, root, true)
	m.note(func(s *Stats) {
		s.Warms++
		if err != nil {
			s.WarmFailures++
			return
		}
		s.WarmSeconds += rep.Seconds
		s.LastWarm = rep
	})
	if err != nil {
		m.logger().Warn("opcache warm failed", "release", root, "err", err, "seconds", time.Since(start).Seconds())
		return nil, err
	}
	r := m.remember(root)
	r.warmed, r.files = time.Now(), rep.Files
	m.logger().Info("opcache warm", "release", root, "files", rep.Files, "compiled", rep.Compiled, "cached", rep.Cached,
		"too_new", rep.TooNew, "failed", rep.Failed, "not_cached", rep.NotCached, "seconds", rep.Seconds)
	return rep, nil
}

// warm is Warm with m.mu held; mayReset allows one reset to make room.
func (m *Manager) warm(ctx context.Context, root string, mayReset bool) (*WarmReport, error) {
	start := time.Now()
	st, err := m.PHP.OpcacheStatus(ctx, nil)
	if err != nil {
		m.unavailable(err)
		return nil, err
	}
	m.unavailable(nil)
	rep := &WarmReport{Release: root}
	earlier := 0 // compiled by the calls before the last
	for {
		r, err := m.PHP.Warm(ctx, root, warmBudget)
		if err != nil {
			return nil, err
		}
		rep.Compiled += r.Compiled
		rep.Files, rep.Cached = r.Files, r.Cached-earlier
		rep.TooNew, rep.Failed, rep.NotCached, rep.Errors = r.TooNew, r.Failed, r.NotCached, r.Errors
		earlier += r.Compiled
		switch {
		case r.Partial:
			continue
		case r.TooNew > 0 && rep.Waited+r.Wait <= maxTooNewWait.Seconds():
			d := time.Duration((r.Wait + 0.05) * float64(time.Second))
			if err := sleep(ctx, d); err != nil {
				return nil, err
			}
			rep.Waited += d.Seconds()
			continue
		case r.NotCached > 0 && mayReset && m.Gate != nil:
			mayReset = false
			rr, err := m.reset(ctx, fmt.Sprintf("no room to warm %s", root))
			rep.Reset = rr
			if err != nil && !errors.Is(err, errCalledOff) {
				return nil, err
			}
			if err == nil {
				// The reset threw away what this warm compiled.
				rep.Compiled, earlier = 0, 0
				continue
			}
		}
		break
	}
	rep.Notes = notes(rep, st.Config)
	rep.Seconds = time.Since(start).Seconds()
	return rep, nil
}

// notes explains a report's skipped files and the settings that matter.
func notes(rep *WarmReport, c fpmcall.OpcacheConfig) []string {
	var out []string
	if rep.TooNew > 0 {
		out = append(out, fmt.Sprintf("%d files modified less than opcache.file_update_protection=%ds ago were not cached (waited %.1fs); warm again later, or build the release earlier",
			rep.TooNew, c.FileUpdateProtection, rep.Waited))
	} else if rep.Waited > 0 {
		out = append(out, fmt.Sprintf("waited %.1fs for files younger than opcache.file_update_protection=%ds", rep.Waited, c.FileUpdateProtection))
	}
	if rep.Failed > 0 {
		out = append(out, fmt.Sprintf("%d files do not compile (see errors); they run uncached and fail as they would", rep.Failed))
	}
	if rep.NotCached > 0 {
		out = append(out, fmt.Sprintf("%d files compiled but opcache kept no copy: opcache.memory_consumption=%dMiB or opcache.max_accelerated_files=%d is too small for the releases in use, or opcache.blacklist_filename names them",
			rep.NotCached, c.MemoryConsumption>>20, c.MaxAcceleratedFiles))
	}
	if !c.ValidateTimestamps {
		out = append(out, "opcache.validate_timestamps=0: a file changed in place after the warm keeps its warmed code until opcache restarts (releases are new directories, so deploys are not affected)")
	}
	return out
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// unavailable records why opcache cannot be managed, or that it can.
func (m *Manager) unavailable(err error) {
	why := ""
	if err != nil {
		why = err.Error()
	}
	m.note(func(s *Stats) {
		if why != "" && s.Unavailable != why {
			m.logger().Warn("opcache cannot be managed; requests are served as before", "err", err)
		}
		s.Unavailable = why
	})
}
