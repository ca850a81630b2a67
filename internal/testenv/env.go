package testenv

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
)

// sbinDirs are searched after PATH: Debian installs nginx and php-fpm there,
// and a non-root PATH often lacks them.
var sbinDirs = []string{"/usr/sbin", "/usr/local/sbin", "/sbin"}

// packages maps a binary's base name, version suffix removed, to the Debian
// package that provides it.
var packages = map[string]string{
	"nginx":   "nginx-light",
	"php-fpm": "php-fpm",
	"php":     "php-cli",
	"wrk":     "wrk",
	// Front ends other than nginx (trailing digits are cut: apache2).
	"apache":   "apache2-bin",
	"httpd":    "apache2-bin",
	"lighttpd": "lighttpd",
	"caddy":    "caddy",
	"cgi-fcgi": "libfcgi-bin",
	// The alerting rules of deploy/prometheus.
	"promtool": "prometheus",
}

// InCI reports whether the tests run in CI, where the environment variable
// CI is "true". Missing binaries fail tests there instead of skipping them.
func InCI() bool { return os.Getenv("CI") == "true" }

// RequireBinary returns the path of the first of names found as an
// executable file in PATH or in /usr/sbin, /usr/local/sbin and /sbin. A name
// may be a glob such as "php-fpm*"; among several matches in one directory
// the last in lexical order wins. When nothing is found the test is skipped
// with the Debian package to install, or fails if InCI.
func RequireBinary(t testing.TB, names ...string) string {
	t.Helper()
	if path, ok := findBinary(names...); ok {
		return path
	}
	msg := fmt.Sprintf("testenv: none of %s found in PATH or %s; install the Debian package %s",
		strings.Join(names, ", "), strings.Join(sbinDirs, ", "), packageFor(names))
	if InCI() {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func findBinary(names ...string) (string, bool) {
	dirs := filepath.SplitList(os.Getenv("PATH"))
	dirs = append(dirs, sbinDirs...)
	for _, name := range names {
		if filepath.IsAbs(name) {
			if isExecutable(name) {
				return name, true
			}
			continue
		}
		for _, dir := range dirs {
			if dir == "" {
				dir = "."
			}
			matches, _ := filepath.Glob(filepath.Join(dir, name))
			sort.Strings(matches)
			for i := len(matches) - 1; i >= 0; i-- {
				if isExecutable(matches[i]) {
					return matches[i], true
				}
			}
		}
	}
	return "", false
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// packageFor names the Debian package for the first of names it knows.
func packageFor(names []string) string {
	for _, name := range names {
		base := strings.TrimRight(filepath.Base(name), "*?0123456789.")
		if p, ok := packages[base]; ok {
			return p
		}
	}
	if len(names) == 0 {
		return "(none named)"
	}
	return strings.TrimRight(filepath.Base(names[0]), "*?")
}

// FreeAddr returns "127.0.0.1:PORT" for a port that is free right now: it
// listens on port 0 and closes the listener. Another process may take the
// port before the caller binds it; StartFPM and StartNginx retry with a new
// port when that happens to an address they chose.
func FreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("testenv: free port: %w", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		return "", fmt.Errorf("testenv: free port: %w", err)
	}
	return addr, nil
}

// FreeSocket returns "unix:/PATH" for a Unix socket path in a new, short
// directory (t.TempDir paths can exceed the 107 bytes a socket path may
// have), removed when the test ends.
func FreeSocket(t testing.TB, name string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "testenv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return "unix:" + filepath.Join(dir, name)
}

// splitAddr turns an address in this package's notation, "host:port" or
// "unix:/path", into a network and an address for net.Dial.
func splitAddr(addr string) (network, address string) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		return "unix", path
	}
	return "tcp", addr
}

var (
	siteDirMu sync.Mutex
	siteDir   string // found once, kept
)

// testdataSite finds testdata/site in the module root: the nearest directory
// holding go.mod at or above the working directory, which go test sets to the
// directory of the package under test, or else above this source file.
func testdataSite() (string, error) {
	siteDirMu.Lock()
	defer siteDirMu.Unlock()
	if siteDir != "" {
		return siteDir, nil
	}
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		starts = append(starts, filepath.Dir(file))
	}
	for _, dir := range starts {
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				site := filepath.Join(dir, "testdata", "site")
				if _, err := os.Stat(filepath.Join(site, "index.php")); err == nil {
					siteDir = site
					return site, nil
				}
				break
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", errors.New("testenv: no testdata/site/index.php next to a go.mod above the working directory")
}

// isRoot reports whether the test runs as root, in which case servers must
// be told explicitly to keep running as root.
func isRoot() bool { return os.Geteuid() == 0 }
