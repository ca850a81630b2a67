package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// WebServer is a web server in front of a FastCGI application, started by
// StartApache, StartLighttpd or StartCaddy. Its methods are safe for
// concurrent use.
type WebServer struct {
	// Name is the server's, for messages: "apache2", "lighttpd", "caddy".
	Name string
	// Addr is the listening address, "127.0.0.1:PORT".
	Addr string
	// URL is "http://" + Addr.
	URL string
	// ConfPath is the generated main configuration file.
	ConfPath string
	// ErrorLog is the server's error log; its own stdout and stderr go to
	// OutPath.
	ErrorLog, OutPath string

	running
}

// serverSpec says how to start one kind of web server.
type serverSpec struct {
	name, bin, dir string
	confPath       string
	errorLog       string // may equal the output file
	env            []string
	// conf writes the configuration for a server on addr and returns the
	// command's arguments.
	conf func(addr string) ([]string, error)
	// pidFile, if set, must hold the master's pid before the server counts
	// as ready: it is written once the sockets listen, and tells our server
	// from another process that took the port.
	pidFile string
	// readyLog, if set, must appear in the output or the error log before
	// the server counts as ready.
	readyLog string
}

// startWebServer starts spec on a free loopback port, retrying with another
// port when someone took the chosen one first, and returns once it accepts
// connections. It is stopped and waited for when the test ends; if the test
// failed, the end of its logs is logged.
func startWebServer(t testing.TB, spec serverSpec) *WebServer {
	t.Helper()
	w := &WebServer{
		Name:     spec.name,
		ConfPath: spec.confPath,
		ErrorLog: spec.errorLog,
		OutPath:  filepath.Join(spec.dir, spec.name+".out"),
		running:  newRunning(),
	}
	t.Cleanup(func() {
		w.client.CloseIdleConnections()
		w.Stop()
		if t.Failed() {
			t.Logf("%s log %s:\n%s", w.Name, w.ErrorLog, tail(w.ErrorLog, 4096))
			if w.OutPath != w.ErrorLog {
				t.Logf("%s output %s:\n%s", w.Name, w.OutPath, tail(w.OutPath, 4096))
			}
		}
	})
	for attempt := 1; ; attempt++ {
		addr, err := freeAddr()
		if err != nil {
			t.Fatal(err)
		}
		w.Addr, w.URL = addr, "http://"+addr
		args, err := spec.conf(addr)
		if err != nil {
			t.Fatalf("testenv: %s: %v", spec.name, err)
		}
		fromLog, fromOut := fileSize(w.ErrorLog), fileSize(w.OutPath)
		err = w.start(spec, args, fromLog, fromOut)
		if err == nil {
			return w
		}
		logs := string(readFrom(w.ErrorLog, fromLog))
		if w.OutPath != w.ErrorLog {
			logs += string(readFrom(w.OutPath, fromOut))
		}
		if attempt < 5 && strings.Contains(strings.ToLower(logs), "address already in use") {
			continue // someone took the free port first
		}
		t.Fatalf("%v\n%s logs:\n%s", err, spec.name, logs)
	}
}

func (w *WebServer) start(spec serverSpec, args []string, fromLog, fromOut int64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	p, err := startProcess(spec.bin, args, childEnv(spec.env...), spec.dir, w.OutPath)
	if err != nil {
		return err
	}
	want := strconv.Itoa(p.pid())
	err = p.waitReady(func() (bool, error) {
		if spec.pidFile != "" {
			b, _ := os.ReadFile(spec.pidFile)
			if strings.TrimSpace(string(b)) != want {
				return false, nil
			}
		}
		if spec.readyLog != "" &&
			!bytes.Contains(readFrom(w.OutPath, fromOut), []byte(spec.readyLog)) &&
			!bytes.Contains(readFrom(w.ErrorLog, fromLog), []byte(spec.readyLog)) {
			return false, nil
		}
		c, err := net.DialTimeout("tcp", w.Addr, time.Second)
		if err != nil {
			return false, nil
		}
		c.Close()
		return true, nil
	})
	if err != nil {
		p.stop(syscall.SIGTERM, stopGrace)
		return fmt.Errorf("testenv: %s on %s: %w", spec.name, w.Addr, err)
	}
	w.proc = p
	return nil
}

// Get requests w.URL+path and returns the status code and body. A transport
// error fails the test.
func (w *WebServer) Get(t testing.TB, path string) (int, string) {
	t.Helper()
	return do(t, w.client, "GET", w.URL+path, "", nil)
}

// Log returns the server's error log and output so far.
func (w *WebServer) Log() string {
	b, _ := os.ReadFile(w.ErrorLog)
	if w.OutPath == w.ErrorLog {
		return string(b)
	}
	out, _ := os.ReadFile(w.OutPath)
	return string(b) + string(out)
}

// do sends one request and returns the status code and body; a transport
// error fails the test.
func do(t testing.TB, c *http.Client, method, url, contentType string, body io.Reader) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatalf("testenv: %s %s: %v", method, url, err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("testenv: %s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("testenv: %s %s: %v", method, url, err)
	}
	return resp.StatusCode, string(b)
}

// errNoConf reports options without the configuration they must carry.
var errNoConf = errors.New("testenv: options need a configuration function")

// running is a started server process and the HTTP client that talks to
// it: what Nginx and WebServer share.
type running struct {
	client *http.Client

	mu   sync.Mutex
	proc *process
}

func newRunning() running {
	return running{client: &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone(), Timeout: 60 * time.Second}}
}

// Stop stops the server (SIGTERM, a fast shutdown for nginx) and waits for
// it and its children to exit. It does nothing if the server is not running.
func (r *running) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc != nil {
		r.proc.stop(syscall.SIGTERM, stopGrace)
		r.proc = nil
	}
}

// PID returns the master's process id, or 0 if the server is not running.
func (r *running) PID() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc == nil {
		return 0
	}
	return r.proc.pid()
}

// Client returns the HTTP client Get uses; its idle connections are closed
// when the test ends.
func (r *running) Client() *http.Client { return r.client }
