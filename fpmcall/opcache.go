package fpmcall

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/incpathd/incpathd/fcgi"
)

// ErrNoOpcache means php-fpm runs without opcache (not loaded, or
// opcache.enable off): there is nothing to warm or evict.
var ErrNoOpcache = errors.New("fpmcall: php-fpm runs without opcache")

// Params of the opcache actions.
const (
	paramRoot   = "INCPATHD_CALL_ROOT"
	paramRoots  = "INCPATHD_CALL_ROOTS"
	paramBudget = "INCPATHD_CALL_BUDGET"
)

// OpcacheConfig is the part of opcache's configuration incpathd acts on, as
// opcache_get_configuration() reports it.
type OpcacheConfig struct {
	MemoryConsumption    int64   `json:"memory_consumption"`
	MaxAcceleratedFiles  int64   `json:"max_accelerated_files"`
	MaxWastedPercentage  float64 `json:"max_wasted_percentage"` // a fraction: 0.05 is 5%
	ValidateTimestamps   bool    `json:"validate_timestamps"`
	RevalidateFreq       int64   `json:"revalidate_freq"`
	FileUpdateProtection int64   `json:"file_update_protection"`
	ForceRestartTimeout  int64   `json:"force_restart_timeout"`
	RestrictAPI          string  `json:"restrict_api"`
}

// Usage is what opcache holds for one release: cached scripts and the
// shared memory they take.
type Usage struct {
	Scripts int64 `json:"scripts"`
	Bytes   int64 `json:"bytes"`
}

// OpcacheStatus is opcache's state in the php-fpm master the answering
// worker belongs to: its shared memory is common to all the master's
// workers.
type OpcacheStatus struct {
	Config            OpcacheConfig `json:"config"`
	UsedMemory        int64         `json:"used_memory"`
	FreeMemory        int64         `json:"free_memory"`
	WastedMemory      int64         `json:"wasted_memory"`
	Keys              int64         `json:"num_cached_keys"`
	MaxKeys           int64         `json:"max_cached_keys"`
	Scripts           int64         `json:"num_cached_scripts"`
	Hits              int64         `json:"hits"`
	Misses            int64         `json:"misses"`
	OOMRestarts       int64         `json:"oom_restarts"`
	HashRestarts      int64         `json:"hash_restarts"`
	ManualRestarts    int64         `json:"manual_restarts"`
	LastRestartTime   int64         `json:"last_restart_time"`
	CacheFull         bool          `json:"cache_full"`
	RestartPending    bool          `json:"restart_pending"`
	RestartInProgress bool          `json:"restart_in_progress"`
	// Releases maps each root asked about to what opcache holds below it.
	// Scripts below none of them but beside one (another directory in
	// the same parent: a release incpathd does not know, deleted or from
	// before a restart) are counted under that directory; the rest under
	// "".
	Releases map[string]Usage `json:"releases"`
}

// Restarts is the sum of opcache's restarts of every kind.
func (s *OpcacheStatus) Restarts() int64 { return s.OOMRestarts + s.HashRestarts + s.ManualRestarts }

// OpcacheStatus returns opcache's configuration and state, with the cached
// scripts summed per root (release directories, real paths: opcache keys
// scripts by real path). It fails with ErrNoOpcache if php-fpm has none.
func (c *Caller) OpcacheStatus(ctx context.Context, roots []string) (*OpcacheStatus, error) {
	var st OpcacheStatus
	if err := c.opcache(ctx, c.timeout(), "opcache_status", []fcgi.Pair{{Name: paramRoots, Value: strings.Join(roots, "\n")}}, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// WarmResult is what one warm call did with the PHP files of a release.
type WarmResult struct {
	Files int `json:"files"`
	// Compiled were compiled into opcache by this call; Cached were
	// there already.
	Compiled int `json:"compiled"`
	Cached   int `json:"cached"`
	// TooNew were modified less than opcache.file_update_protection
	// seconds ago: opcache would compile them without caching them. Wait
	// is how long until the youngest of them is old enough, in seconds.
	TooNew int     `json:"too_new"`
	Wait   float64 `json:"wait"`
	// Failed did not compile (a parse error: see Errors); NotCached
	// compiled but opcache did not keep them (its memory or hash table is
	// full, or opcache.blacklist_filename names them).
	Failed    int `json:"failed"`
	NotCached int `json:"not_cached"`
	// Partial: the call stopped at its time budget; call again to go on.
	Partial bool `json:"partial"`
	// Errors are the first messages, "path: message".
	Errors []string `json:"errors"`
}

// Warm compiles every .php file below root (a real path; symlinks inside
// are not followed) into opcache, for at most budget, and reports what it
// did. It fails with ErrNoOpcache if php-fpm has no opcache.
func (c *Caller) Warm(ctx context.Context, root string, budget time.Duration) (*WarmResult, error) {
	var r WarmResult
	extra := []fcgi.Pair{
		{Name: paramRoot, Value: root},
		{Name: paramBudget, Value: strconv.FormatFloat(budget.Seconds(), 'f', 3, 64)},
	}
	if err := c.opcache(ctx, budget+c.timeout(), "opcache_warm", extra, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Invalidate marks every script opcache holds below root stale
// (opcache_invalidate): its memory becomes wasted, its hash slot stays
// taken until opcache restarts. It returns the scripts and bytes it marked.
func (c *Caller) Invalidate(ctx context.Context, root string) (Usage, error) {
	var u Usage
	err := c.opcache(ctx, c.timeout(), "opcache_invalidate", []fcgi.Pair{{Name: paramRoot, Value: root}}, &u)
	return u, err
}

// Reset asks opcache to restart (opcache_reset). Opcache empties itself at
// the start of the next request that finds no other request running in
// the master: until then RestartPending is set.
func (c *Caller) Reset(ctx context.Context) error {
	var ok bool
	if err := c.opcache(ctx, c.timeout(), "opcache_reset", nil, &ok); err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: opcache_reset() returned false", ErrCall)
	}
	return nil
}

// opcache runs an opcache action and decodes its answer into out. The
// script answers {"error": "no_opcache"} without opcache, and
// {"error": "...", "warnings": [...]} when PHP complained.
func (c *Caller) opcache(ctx context.Context, timeout time.Duration, action string, extra []fcgi.Pair, out any) error {
	body, err := c.callFor(ctx, timeout, action, extra)
	if err != nil {
		return err
	}
	var ans struct {
		Error    string          `json:"error"`
		Warnings []string        `json:"warnings"`
		Result   json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		return fmt.Errorf("%w: answer %.80q: %w", ErrCall, body, err)
	}
	switch {
	case ans.Error == "no_opcache":
		return fmt.Errorf("%w (%s)", ErrNoOpcache, strings.Join(ans.Warnings, "; "))
	case ans.Error != "":
		return fmt.Errorf("%w: %s: %s", ErrCall, ans.Error, strings.Join(ans.Warnings, "; "))
	}
	if err := json.Unmarshal(ans.Result, out); err != nil {
		return fmt.Errorf("%w: answer %.80q: %w", ErrCall, ans.Result, err)
	}
	return nil
}

// DefaultDirs are the directories tried for the script when none is given,
// in order: the directory of php-fpm's unix socket (upstream "unix:/path"),
// which php-fpm reads at the same path wherever incpathd runs (beside it on
// the host, or in a volume shared with a php-fpm container); systemd's
// RuntimeDirectory (RUNTIME_DIRECTORY, /run/incpathd in the unit of
// deploy/systemd); /run/incpathd. The temporary directory comes last: the
// php-fpm unit of Debian sets PrivateTmp=, and so does incpathd's, so
// php-fpm does not see incpathd's /tmp there.
func DefaultDirs(upstream string, getenv func(string) string) []string {
	var dirs []string
	if path, ok := strings.CutPrefix(upstream, "unix:"); ok && filepath.IsAbs(path) {
		dirs = append(dirs, filepath.Dir(path))
	}
	if rd := getenv("RUNTIME_DIRECTORY"); rd != "" {
		// systemd gives several as a colon-separated list.
		first, _, _ := strings.Cut(rd, ":")
		if filepath.IsAbs(first) {
			dirs = append(dirs, first)
		}
	}
	if fi, err := os.Stat("/run/incpathd"); err == nil && fi.IsDir() {
		dirs = append(dirs, "/run/incpathd")
	}
	return dirs
}

// opcacheScript holds the opcache cases of script's switch. Every answer
// is {"result": ...} or {"error": ..., "warnings": [...]}; PHP's warnings
// are collected, not written to stderr, where a warning about one file of
// a warm would fail the whole call.
const opcacheScript = `case 'opcache_status':
case 'opcache_warm':
case 'opcache_invalidate':
case 'opcache_reset':
    header('X-Incpathd-Call: ok');
    $warnings = [];
    set_error_handler(function ($no, $msg, $file = '', $line = 0) use (&$warnings) {
        if (count($warnings) < 20) {
            $warnings[] = $msg;
        }
        return true;
    });
    $answer = function ($result) use (&$warnings) {
        echo json_encode(['result' => $result, 'warnings' => $warnings], JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE);
    };
    $fail = function ($error) use (&$warnings) {
        echo json_encode(['error' => $error, 'warnings' => $warnings], JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE);
    };
    if (!function_exists('opcache_get_status')) {
        $warnings[] = 'the opcache extension is not loaded';
        $fail('no_opcache');
        break;
    }
    if (!ini_get('opcache.enable')) {
        $warnings[] = 'opcache.enable is off';
        $fail('no_opcache');
        break;
    }
    $below = function ($path, $root) {
        return $root !== '' && strncmp($path, $root . '/', strlen($root) + 1) === 0;
    };
    set_time_limit(0);
    switch ($_SERVER['` + paramAction + `']) {
    case 'opcache_status':
        $st = opcache_get_status(true);
        $conf = opcache_get_configuration();
        if (!is_array($st) || !is_array($conf)) {
            $fail(is_array($st) || is_array($conf) ? 'opcache_get_status or opcache_get_configuration failed' : 'no_opcache');
            break;
        }
        $d = $conf['directives'];
        $roots = array_values(array_filter(explode("\n", (string) ($_SERVER['` + paramRoots + `'] ?? ''))));
        $rel = [];
        foreach ($roots as $r) {
            $rel[$r] = ['scripts' => 0, 'bytes' => 0];
        }
        foreach ($st['scripts'] ?? [] as $s) {
            $path = $s['full_path'];
            $key = null;
            foreach ($roots as $r) {
                if ($below($path, $r) && ($key === null || strlen($r) > strlen($key))) {
                    $key = $r;
                }
            }
            if ($key === null) {
                foreach ($roots as $r) {
                    $parent = dirname($r);
                    if ($parent !== '/' && $below($path, $parent)) {
                        $rest = substr($path, strlen($parent) + 1);
                        $key = $parent . '/' . explode('/', $rest, 2)[0];
                        break;
                    }
                }
            }
            $key = $key ?? '';
            $rel[$key] = $rel[$key] ?? ['scripts' => 0, 'bytes' => 0];
            $rel[$key]['scripts']++;
            $rel[$key]['bytes'] += $s['memory_consumption'];
        }
        $m = $st['memory_usage'];
        $o = $st['opcache_statistics'];
        $answer([
            'config' => [
                'memory_consumption' => (int) $d['opcache.memory_consumption'],
                'max_accelerated_files' => (int) $d['opcache.max_accelerated_files'],
                'max_wasted_percentage' => (float) $d['opcache.max_wasted_percentage'],
                'validate_timestamps' => (bool) $d['opcache.validate_timestamps'],
                'revalidate_freq' => (int) $d['opcache.revalidate_freq'],
                'file_update_protection' => (int) $d['opcache.file_update_protection'],
                'force_restart_timeout' => (int) $d['opcache.force_restart_timeout'],
                'restrict_api' => (string) $d['opcache.restrict_api'],
            ],
            'used_memory' => $m['used_memory'],
            'free_memory' => $m['free_memory'],
            'wasted_memory' => $m['wasted_memory'],
            'num_cached_keys' => $o['num_cached_keys'],
            'max_cached_keys' => $o['max_cached_keys'],
            'num_cached_scripts' => $o['num_cached_scripts'],
            'hits' => $o['hits'],
            'misses' => $o['misses'],
            'oom_restarts' => $o['oom_restarts'],
            'hash_restarts' => $o['hash_restarts'],
            'manual_restarts' => $o['manual_restarts'],
            'last_restart_time' => $o['last_restart_time'],
            'cache_full' => (bool) $st['cache_full'],
            'restart_pending' => (bool) $st['restart_pending'],
            'restart_in_progress' => (bool) $st['restart_in_progress'],
            'releases' => (object) $rel,
        ]);
        break;
    case 'opcache_warm':
        $root = (string) ($_SERVER['` + paramRoot + `'] ?? '');
        $budget = (float) ($_SERVER['` + paramBudget + `'] ?? '30');
        $start = microtime(true);
        if ($root === '' || !is_dir($root)) {
            $fail('not a directory: ' . $root);
            break;
        }
        // A file younger than this is compiled but not cached
        // (ZendAccelerator.c, compile_and_cache_file).
        $fup = (int) ini_get('opcache.file_update_protection');
        $r = ['files' => 0, 'compiled' => 0, 'cached' => 0, 'too_new' => 0, 'wait' => 0.0,
              'failed' => 0, 'not_cached' => 0, 'partial' => false, 'errors' => []];
        $note = function ($path, $msg) use (&$r) {
            if (count($r['errors']) < 20) {
                $r['errors'][] = $path . ': ' . $msg;
            }
        };
        $it = new RecursiveIteratorIterator(new RecursiveDirectoryIterator($root,
            FilesystemIterator::SKIP_DOTS | FilesystemIterator::CURRENT_AS_FILEINFO));
        foreach ($it as $f) {
            if ($f->isLink() || !$f->isFile() || strtolower($f->getExtension()) !== 'php') {
                continue;
            }
            $path = $f->getPathname();
            $r['files']++;
            if (opcache_is_script_cached($path)) {
                $r['cached']++;
                continue;
            }
            if (microtime(true) - $start > $budget) {
                $r['partial'] = true;
                continue;
            }
            $age = time() - $f->getMTime();
            if ($fup > 0 && $age < $fup) {
                $r['too_new']++;
                $r['wait'] = max($r['wait'], (float) ($fup - $age));
                continue;
            }
            try {
                $ok = opcache_compile_file($path);
            } catch (Throwable $e) {
                $r['failed']++;
                $note($path, $e->getMessage());
                continue;
            }
            if (!$ok) {
                $r['failed']++;
                $note($path, 'opcache_compile_file failed');
            } elseif (opcache_is_script_cached($path)) {
                $r['compiled']++;
            } else {
                $r['not_cached']++;
            }
        }
        $answer($r);
        break;
    case 'opcache_invalidate':
        $root = (string) ($_SERVER['` + paramRoot + `'] ?? '');
        $st = opcache_get_status(true);
        if (!is_array($st) || $root === '') {
            $fail($root === '' ? 'no root' : 'opcache_get_status failed');
            break;
        }
        $u = ['scripts' => 0, 'bytes' => 0];
        foreach ($st['scripts'] ?? [] as $s) {
            if ($below($s['full_path'], $root) && opcache_invalidate($s['full_path'], true)) {
                $u['scripts']++;
                $u['bytes'] += $s['memory_consumption'];
            }
        }
        $answer($u);
        break;
    case 'opcache_reset':
        $answer(opcache_reset());
        break;
    }
    break;
`
