package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/incpathd/incpathd/internal/unixsock"
)

// DefaultMode is the permission of a unix control socket: the endpoint
// shows server paths, so only incpathd's own user may connect.
const DefaultMode os.FileMode = 0o600

// ErrNotLoopback refuses a TCP control address that is not loopback: the
// endpoint has no authentication.
var ErrNotLoopback = errors.New("control: not a loopback address")

// CheckAddr validates a control address: "unix:/absolute/path", or
// "host:port" with a loopback IP (127.0.0.0/8, ::1) or "localhost" as the
// host. Any other host is refused with ErrNotLoopback unless allowRemote.
func CheckAddr(addr string, allowRemote bool) error {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if !filepath.IsAbs(path) {
			return fmt.Errorf("control: %q: the socket path must be absolute", addr)
		}
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("control: %q: %w", addr, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("control: %q: bad port", addr)
	}
	if allowRemote || host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() {
		return fmt.Errorf("%w: %q (use unix:/path, 127.0.0.1:PORT or [::1]:PORT)", ErrNotLoopback, addr)
	}
	return nil
}

// Listen opens the control address (see CheckAddr). A unix socket is made
// by unixsock.Listen: it never has wider permissions than mode, a stale
// socket left by a crash is replaced, a live one or anything that is not a
// socket refused. Closing the listener removes the socket.
func Listen(addr string, mode os.FileMode, allowRemote bool) (net.Listener, error) {
	if err := CheckAddr(addr, allowRemote); err != nil {
		return nil, err
	}
	path, ok := strings.CutPrefix(addr, "unix:")
	if !ok {
		network := "tcp"
		if host, port, _ := net.SplitHostPort(addr); host == "localhost" {
			addr = net.JoinHostPort("127.0.0.1", port) // not whatever /etc/hosts says
			network = "tcp4"
		}
		l, err := net.Listen(network, addr)
		if err != nil {
			return nil, fmt.Errorf("control: %w", err)
		}
		return l, nil
	}
	l, err := unixsock.Listen(path, mode)
	if err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	return l, nil
}

// Handler serves GET /releases with status's answer.
func Handler(status func() Status) http.Handler { return NewMux(status) }

// NewMux is Handler as a mux more routes can be added to (see Routes).
func NewMux(status func() Status) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /releases", func(w http.ResponseWriter, r *http.Request) {
		b, err := json.MarshalIndent(status(), "", "  ")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(append(b, '\n'))
	})
	return mux
}

// Server is the control endpoint: Handler served on a listener with
// timeouts fit for a local, read-only endpoint.
func Server(status func() Status) *http.Server { return ServerFor(Handler(status)) }

// ServerFor is Server for any handler; a handler that runs long (a warm)
// extends its own write deadline.
//
// Each connection's peer is read for the audit (ConnContext).
func ServerFor(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ConnContext:       ConnContext,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
	}
}
