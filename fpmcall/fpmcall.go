// Package fpmcall runs incpathd's own PHP script in php-fpm, over incpathd's
// own upstream connections, to learn what only the PHP workers know (the
// pool's ini values; later, opcache control).
//
// Start writes the script, under a name no one can guess, into a directory
// php-fpm must be able to read at the same path. The script answers only a
// request that carries the secret made for this Caller: it holds the
// secret's SHA-256, never the secret, and the secret travels only in a
// FastCGI param incpathd sends on its own connection. A request the web
// server routes to the script, whatever it sends, gets 404. Close removes
// the script.
package fpmcall

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/incpathd/incpathd/fcgi"
)

// Errors of a call, wrapped with its cause.
var (
	// ErrCall means the script could not be run or answered with an
	// error: php-fpm cannot read it (another file system, open_basedir),
	// or it refused the secret.
	ErrCall = errors.New("fpmcall: call failed")
)

// Params the script reads. The secret is checked before anything else.
const (
	paramSecret = "INCPATHD_CALL_SECRET"
	paramAction = "INCPATHD_CALL"
	paramKeys   = "INCPATHD_CALL_KEYS"
)

// maxAnswer bounds what a call reads back.
const maxAnswer = 1 << 20

// Caller runs the script. Pool and Dir are read by Start; a Caller is safe
// for concurrent calls after Start.
type Caller struct {
	// Pool is the php-fpm pool the calls go to. It must be set.
	Pool *fcgi.Pool
	// Active, if not nil, returns the pool each call goes to instead of
	// Pool: the active one of several (blue/green), so that a warm or a
	// probe reaches the php-fpm that serves.
	Active func() *fcgi.Pool
	// Dir is where the script is written; php-fpm must read it at the same
	// path, and no docroot may hold it. If empty, the first of Candidates
	// where the script can be written (see DefaultDirs), else os.TempDir().
	Dir string
	// Candidates are tried in order when Dir is empty.
	Candidates []string
	// Timeout bounds one call. If zero, 10 seconds.
	Timeout time.Duration

	path, secret string
}

// Start writes the script with a new secret.
func (c *Caller) Start() error {
	if c.Dir != "" {
		return c.startIn(c.Dir)
	}
	var errs []error
	for _, d := range append(c.Candidates, os.TempDir()) {
		err := c.startIn(d)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (c *Caller) startIn(dir string) error {
	var b [32]byte
	rand.Read(b[:])
	c.secret = hex.EncodeToString(b[:])
	rand.Read(b[:8])
	// The random part of the name is no secret (the hash is): it only keeps
	// two processes sharing a directory apart.
	path := filepath.Join(dir, ".incpathd-call-"+hex.EncodeToString(b[:8])+".php")
	sum := sha256.Sum256([]byte(c.secret))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("fpmcall: writing the script: %w", err)
	}
	_, err = f.WriteString(strings.Replace(script, "@HASH@", hex.EncodeToString(sum[:]), 1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("fpmcall: writing the script: %w", err)
	}
	c.path = path
	return nil
}

// Path returns the script's path, "" before Start.
func (c *Caller) Path() string { return c.path }

// Close removes the script. It may be called more than once.
func (c *Caller) Close() error {
	if c.path == "" {
		return nil
	}
	err := os.Remove(c.path)
	c.path = ""
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("fpmcall: %w", err)
	}
	return nil
}

// INI returns the current value of each ini key in the worker that answers,
// and whether PHP knows the key. A call sends no PHP_VALUE: it changes
// nothing in the worker.
func (c *Caller) INI(ctx context.Context, keys []string) (map[string]*string, error) {
	body, err := c.call(ctx, "ini", []fcgi.Pair{{Name: paramKeys, Value: strings.Join(keys, ",")}})
	if err != nil {
		return nil, err
	}
	var out map[string]*string
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, fmt.Errorf("%w: answer %.80q: %w", ErrCall, body, err)
	}
	for _, k := range keys {
		if _, ok := out[k]; !ok {
			return nil, fmt.Errorf("%w: no value for %s in the answer", ErrCall, k)
		}
	}
	return out, nil
}

func (c *Caller) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return 10 * time.Second
}

// call runs the script once and returns the body of its answer.
func (c *Caller) call(ctx context.Context, action string, extra []fcgi.Pair) ([]byte, error) {
	return c.callFor(ctx, c.timeout(), action, extra)
}

// callFor is call with its own time bound.
func (c *Caller) callFor(ctx context.Context, timeout time.Duration, action string, extra []fcgi.Pair) ([]byte, error) {
	if c.path == "" {
		return nil, fmt.Errorf("%w: not started", ErrCall)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pool := c.Pool
	if c.Active != nil {
		pool = c.Active()
	}
	uc, err := pool.Fresh(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCall, err)
	}
	stdout, err := c.roundTrip(ctx, uc, action, extra)
	if err != nil {
		pool.Discard(uc)
		return nil, err
	}
	pool.Put(uc)
	return answerBody(stdout)
}

func (c *Caller) roundTrip(ctx context.Context, uc *fcgi.Conn, action string, extra []fcgi.Pair) ([]byte, error) {
	name := "/" + filepath.Base(c.path)
	params := append([]fcgi.Pair{
		{Name: "GATEWAY_INTERFACE", Value: "CGI/1.1"},
		{Name: "SERVER_SOFTWARE", Value: "incpathd"},
		{Name: "REQUEST_METHOD", Value: "GET"},
		{Name: "SCRIPT_FILENAME", Value: c.path},
		{Name: "SCRIPT_NAME", Value: name},
		{Name: "REQUEST_URI", Value: name},
		{Name: "DOCUMENT_ROOT", Value: filepath.Dir(c.path)},
		{Name: "QUERY_STRING", Value: ""},
		{Name: paramSecret, Value: c.secret},
		{Name: paramAction, Value: action},
	}, extra...)
	out := fcgi.Collector{Max: maxAnswer}
	if _, err := uc.RoundTrip(ctx, &fcgi.Call{Params: params, KeepConn: true}, &out); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCall, err)
	}
	if len(out.Stderr) > 0 {
		return nil, fmt.Errorf("%w: php-fpm: %.200s (%s)", ErrCall, bytes.TrimSpace(out.Stderr), hint)
	}
	return out.Stdout, nil
}

// answerBody checks the CGI headers of the script's answer and returns its
// body. The script sets X-Incpathd-Call: ok; php-fpm's own answers
// ("Primary script unknown", 404) and a refused secret do not.
func answerBody(stdout []byte) ([]byte, error) {
	head, body, ok := bytes.Cut(stdout, []byte("\r\n\r\n"))
	if !ok {
		return nil, fmt.Errorf("%w: answer without headers: %.80q", ErrCall, stdout)
	}
	for _, line := range strings.Split(string(head), "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "X-Incpathd-Call") && strings.TrimSpace(v) == "ok" {
			return body, nil
		}
	}
	return nil, fmt.Errorf("%w: the script did not answer (%s): %.120q", ErrCall, hint, stdout)
}

const hint = "its directory must be readable by php-fpm at the same path, and inside the pool's open_basedir"

// script is the PHP side. @HASH@ is the SHA-256 of the secret, in hex.
const script = `<?php
// Written by incpathd at start and removed at exit; runs only for incpathd,
// which sends the secret whose SHA-256 is below.
$secret = $_SERVER['` + paramSecret + `'] ?? '';
if (!is_string($secret) || !hash_equals('@HASH@', hash('sha256', $secret))) {
    http_response_code(404);
    exit;
}
header('Content-Type: application/json');
switch ($_SERVER['` + paramAction + `'] ?? '') {
case 'ini':
    header('X-Incpathd-Call: ok');
    $out = [];
    foreach (explode(',', (string) ($_SERVER['` + paramKeys + `'] ?? '')) as $key) {
        if ($key !== '') {
            $v = ini_get($key);
            $out[$key] = $v === false ? null : $v;
        }
    }
    echo json_encode($out, JSON_UNESCAPED_SLASHES);
    break;
` + opcacheScript + `default:
    http_response_code(400);
    echo 'null';
}
`
