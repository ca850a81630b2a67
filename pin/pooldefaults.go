package pin

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/incpathd/incpathd/rewrite"
)

// poolRetry is how long after a failed attempt to learn the pool's ini
// values the next request tries again. Requests in between are pinned
// without the missing defaults.
const poolRetry = 5 * time.Second

// poolDefaults learns, once, the pool's own values of the pinned ini keys
// that Rewrite has no default for.
//
// php-fpm writes every PHP_VALUE and PHP_ADMIN_VALUE entry into the
// worker's master ini table and restores none at the end of the request
// (sapi/fpm/fpm/fpm_php.c, fpm_php_zend_ini_alter_master, php-fpm 8.2): a
// key one request pinned to release A stays so in that worker for the
// next request that does not set it. So each pinned key must be sent on
// every pinned request; when the request does not set it, with the value
// the pool would have given it. Only the workers know that value (php.ini
// plus the pool's php_value and php_admin_value), hence the call.
type poolDefaults struct {
	cfg     atomic.Pointer[learned] // once learned
	mu      sync.Mutex              // one attempt at a time
	failed  atomic.Int64            // UnixNano of the last failed attempt; 0: none
	missing []string                // keys to learn; nil: nothing to learn
}

// learned is Pinner.Rewrite with the pool's values added as defaults.
type learned struct {
	cfg      rewrite.Config
	prepared *rewrite.Prepared // cfg's
}

// init prepares Rewrite, and finds the keys to learn.
func (p *Pinner) init() {
	p.prepared = p.Rewrite.Prepare()
	if p.PoolINI == nil {
		return
	}
	keys := p.Rewrite.PinINI
	if keys == nil {
		keys = rewrite.DefaultPinINI
	}
	for _, k := range keys {
		if k == "include_path" && p.Rewrite.IncludePath != "" ||
			slices.ContainsFunc(p.Rewrite.Defaults, func(d rewrite.Setting) bool { return d.Key == k }) {
			continue
		}
		p.learn.missing = append(p.learn.missing, k)
	}
}

// rewriteConfig returns the Config requests are pinned with, prepared:
// Rewrite, with the pool's values added as defaults once they are known.
// from and to are the request's docroots, unresolved and resolved.
func (p *Pinner) rewriteConfig(from, to string) *rewrite.Prepared {
	if c := p.learn.cfg.Load(); c != nil {
		return c.prepared
	}
	if len(p.learn.missing) == 0 || p.learn.retryLater() {
		return p.prepared
	}
	return p.learnPool(from, to)
}

func (p *Pinner) learnPool(from, to string) *rewrite.Prepared {
	l := &p.learn
	l.mu.Lock()
	defer l.mu.Unlock()
	if c := l.cfg.Load(); c != nil {
		return c.prepared
	}
	if l.retryLater() {
		return p.prepared
	}
	values, err := p.PoolINI(context.Background(), l.missing)
	if err != nil {
		l.failed.Store(time.Now().UnixNano())
		p.logger().Error("cannot learn the php-fpm pool's ini values; requests that do not set them are pinned without them, and a value an earlier request set stays in the worker; set --pin-default for each key, or let php-fpm read --pool-probe-dir",
			"keys", l.missing, "err", err)
		return p.prepared
	}
	c := p.Rewrite
	c.Defaults = slices.Clone(c.Defaults)
	pat, target, unpin := p.Rewrite.PatternTarget(from, to)
	unpin = unpin && target != pat && target != ""
	for _, k := range l.missing {
		if v := values[k]; v != nil {
			val := *v
			if unpin {
				val = unpinValue(val, pat, filepath.Dir(target))
			}
			c.Defaults = append(c.Defaults, rewrite.Setting{Key: k, Value: val})
		}
	}
	p.logger().Info("learned the php-fpm pool's ini values", "defaults", c.Defaults)
	got := &learned{cfg: c, prepared: c.Prepare()}
	l.cfg.Store(got)
	return got.prepared
}

// retryLater reports whether an attempt failed less than poolRetry ago:
// the requests until then are pinned without the pool's values, and check
// so without taking the lock.
func (l *poolDefaults) retryLater() bool {
	f := l.failed.Load()
	return f != 0 && time.Since(time.Unix(0, f)) < poolRetry
}

// unpinValue undoes an earlier pin in a value learned from a worker. The
// worker may hold what an earlier incpathd process (before a restart) sent
// it, with the pattern replaced by a release directory: a path in
// releases, the directory that holds the release the pattern points at
// now. Each path of the ':'-separated list that lies in a directory of
// releases gets that directory replaced by the pattern again, so the value
// is pinned to each request's own release, not to the one the earlier
// process saw. A pool whose own value names a directory beside the
// releases would be misread so: set --pin-default for it.
func unpinValue(v, pattern, releases string) string {
	if releases == "/" || releases == "." || !strings.Contains(v, releases+"/") {
		return v
	}
	parts := strings.Split(v, ":")
	for i, e := range parts {
		rest, ok := strings.CutPrefix(e, releases+"/")
		if !ok || rest == "" {
			continue
		}
		if k := strings.IndexByte(rest, '/'); k >= 0 {
			parts[i] = pattern + rest[k:]
		} else {
			parts[i] = pattern
		}
	}
	return strings.Join(parts, ":")
}
