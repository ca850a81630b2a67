package testenv

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// GetFunc sends GET path (with its query) through some front end and
// returns the status code and body.
type GetFunc func(path string) (status int, body string, err error)

// HTTPGet returns a GetFunc for base, "http://host:port", through c.
func HTTPGet(c *http.Client, base string) GetFunc {
	return func(path string) (int, string, error) {
		resp, err := c.Get(base + path)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
}

// LateInclude requests late.php through get, waits until the script has
// made its first include, calls between (which flips the release, say),
// lets the script make its late include, and returns the line it printed,
// such as "A A A A": the releases of the script, of the include before
// between, of the include after it and of release.txt read through
// DOCUMENT_ROOT. No sleeping is involved: the script tells when it is
// inside the pause and waits for the test to end it. A request that fails
// or never reaches the pause fails the test.
func LateInclude(t testing.TB, get GetFunc, between func()) string {
	t.Helper()
	ready := filepath.Join(t.TempDir(), "ready")
	type result struct {
		status int
		body   string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		status, body, err := get("/late.php?ready=" + url.QueryEscape(ready))
		done <- result{status, body, err}
	}()
	deadline := time.After(30 * time.Second)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		select {
		case r := <-done:
			t.Fatalf("testenv: late.php answered before its pause: %d %q %v", r.status, r.body, r.err)
		case <-deadline:
			os.Remove(ready)
			t.Fatal("testenv: late.php did not reach its pause in 30 s")
		case <-time.After(5 * time.Millisecond):
		}
	}
	between()
	if err := os.Remove(ready); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("testenv: late.php did not answer in 60 s after its pause")
	}
	if r.err == nil && r.status != http.StatusOK {
		r.err = fmt.Errorf("status %d: %q", r.status, r.body)
	}
	if r.err != nil {
		t.Fatalf("testenv: late.php: %v", r.err)
	}
	if len(r.body) == 0 || r.body[len(r.body)-1] != '\n' {
		t.Fatalf("testenv: late.php: %v: %q", errLateLine, r.body)
	}
	return r.body[:len(r.body)-1]
}

var errLateLine = errors.New("not one line")
