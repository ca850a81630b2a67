package lifecycle

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/cloudflare/tableflip"

	"github.com/incpathd/incpathd/internal/unixsock"
)

// Env is what the lifecycle takes from the process it runs in.
type Env struct {
	// Getenv reads systemd's LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES and
	// NOTIFY_SOCKET. If nil, os.Getenv.
	Getenv func(string) string
	// Unsetenv removes systemd's LISTEN_* variables once their sockets are
	// taken, so that no child takes them again. If nil, os.Unsetenv.
	Unsetenv func(string) error
	// PID is this process's id, compared with LISTEN_PID and written to
	// the pid file. If zero, os.Getpid().
	PID int
	// Restartable says this process is incpathd itself: it owns SIGHUP and
	// replaces itself on it. If false (tests that run the daemon
	// in-process), sockets are plain listeners and SIGHUP is left alone.
	Restartable bool
}

func (e Env) getenv(k string) string {
	if e.Getenv == nil {
		return os.Getenv(k)
	}
	return e.Getenv(k)
}

func (e Env) unsetenv(k string) {
	if e.Unsetenv == nil {
		os.Unsetenv(k)
		return
	}
	e.Unsetenv(k)
}

func (e Env) pid() int {
	if e.PID == 0 {
		return os.Getpid()
	}
	return e.PID
}

// Config says how a Lifecycle runs.
type Config struct {
	// PIDFile, if not empty, is written with the serving process's pid once
	// it is ready, and removed when it exits without a successor.
	PIDFile string
	// Logger receives restarts and socket take-overs. If nil, slog.Default().
	Logger *slog.Logger
	// Env is the process around the lifecycle.
	Env Env
}

// Lifecycle owns the listening sockets across restarts. On SIGHUP it starts
// the binary at os.Args[0] again (a new build, if one was put there) with
// the same arguments and environment, hands it the sockets, and once the
// new process is ready lets this one drain and exit: no connection is
// refused and no request is cut. It also takes sockets from systemd
// (LISTEN_FDS) and tells systemd about readiness (NOTIFY_SOCKET).
type Lifecycle struct {
	log     *slog.Logger
	env     Env
	upg     *tableflip.Upgrader // nil when not restartable
	pidFile string

	systemd []sdSocket // sockets systemd passed, in descriptor order

	mu       sync.Mutex
	owned    []ownedSocket // unix sockets this process created
	isReady  atomic.Bool   // ready succeeded: the sockets are this process's
	hup      chan os.Signal
	done     chan struct{} // closed by stopping
	stopOnce sync.Once
	handed   atomic.Bool   // a successor took over
	handover chan struct{} // closed then
}

// New takes the sockets systemd passed and, if c.Env.Restartable, those a
// previous incpathd hands over, and catches SIGHUP from then on.
func New(c Config) (*Lifecycle, error) {
	lc := &Lifecycle{log: c.Logger, env: c.Env, pidFile: c.PIDFile, handover: make(chan struct{})}
	if lc.log == nil {
		lc.log = slog.Default()
	}
	if c.Env.Restartable {
		upg, err := tableflip.New(tableflip.Options{})
		if err != nil {
			return nil, fmt.Errorf("restart support: %w", err)
		}
		lc.upg = upg
		// Caught from the start: SIGHUP's default action kills, and systemd
		// may reload as soon as the pid file appears. A signal that comes
		// before ready waits for it.
		lc.hup = make(chan os.Signal, 1)
		signal.Notify(lc.hup, syscall.SIGHUP)
	}
	sd, err := systemdListeners(c.Env)
	if err != nil {
		lc.Close()
		return nil, err
	}
	lc.systemd = sd
	return lc, nil
}

// Open opens addr: "host:port", or "unix:/path" with permissions mode,
// created by unixsock.Listen, which replaces a stale socket left by a crash
// and refuses a live one or anything that is not a socket.
func Open(addr string, mode os.FileMode) (net.Listener, error) {
	path, ok := strings.CutPrefix(addr, "unix:")
	if !ok {
		return net.Listen("tcp", addr)
	}
	return unixsock.Listen(path, mode)
}

// FCGIListeners opens the sockets the web server connects to: the ones a
// previous incpathd handed over, else the ones systemd passed (all but one
// named "metrics"), else addr (see Open) with mode.
func (lc *Lifecycle) FCGIListeners(addr string, mode os.FileMode) ([]net.Listener, error) {
	var out []net.Listener
	if lc.upg != nil {
		for i := 0; ; i++ {
			l, err := lc.upg.Fds.Listener("systemd", "fcgi"+strconv.Itoa(i))
			if err != nil {
				closeAll(out)
				return nil, err
			}
			if l == nil {
				break
			}
			out = append(out, l)
		}
		if len(out) > 0 {
			return out, nil
		}
	}
	for _, s := range lc.systemd {
		if s.name == "metrics" {
			continue
		}
		if err := lc.keep("systemd", "fcgi"+strconv.Itoa(len(out)), s.l); err != nil {
			return nil, err
		}
		out = append(out, s.l)
	}
	if len(out) > 0 {
		lc.log.Info("using sockets from systemd; --listen is ignored", "count", len(out))
		return out, nil
	}
	l, err := lc.Listen(addr, func() (net.Listener, error) { return Open(addr, mode) })
	if err != nil {
		return nil, err
	}
	return []net.Listener{l}, nil
}

// MetricsListener takes the socket systemd passed as "metrics", or opens
// addr (see Open) with mode; it returns nil if there is neither.
func (lc *Lifecycle) MetricsListener(addr string, mode os.FileMode) (net.Listener, error) {
	if lc.upg != nil {
		if l, err := lc.upg.Fds.Listener("systemd", "metrics"); l != nil || err != nil {
			return l, err
		}
	}
	for _, s := range lc.systemd {
		if s.name == "metrics" {
			return s.l, lc.keep("systemd", "metrics", s.l)
		}
	}
	if addr == "" {
		return nil, nil
	}
	return lc.Listen(addr, func() (net.Listener, error) { return Open(addr, mode) })
}

// Listen opens addr ("host:port" or "unix:/path") with create, or takes it
// over from the process this one replaces; a restart hands it on.
func (lc *Lifecycle) Listen(addr string, create func() (net.Listener, error)) (net.Listener, error) {
	network, key := "tcp", addr
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, key = "unix", path
	}
	if lc.upg == nil {
		l, err := create()
		if err == nil && network == "unix" {
			lc.own(key)
		}
		return l, err
	}
	created := false
	l, err := lc.upg.Fds.ListenWithCallback(network, key, func(string, string) (net.Listener, error) {
		created = true
		return create()
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	if !created {
		lc.log.Debug("took over socket", "addr", addr)
	} else if network == "unix" {
		lc.own(key)
	}
	return l, nil
}

// keep registers a socket systemd passed, so that a restart hands it on.
func (lc *Lifecycle) keep(network, name string, l net.Listener) error {
	if lc.upg == nil {
		return nil
	}
	tl, ok := l.(tableflip.Listener)
	if !ok {
		return fmt.Errorf("systemd socket %s: %T cannot be handed over", name, l)
	}
	return lc.upg.Fds.AddListener(network, name, tl)
}

// own records a unix socket this process created, to be removed when it
// exits without a successor.
func (lc *Lifecycle) own(path string) {
	fi, err := os.Lstat(path)
	if err != nil {
		return
	}
	lc.mu.Lock()
	defer lc.mu.Unlock()
	lc.owned = append(lc.owned, ownedSocket{path, fi})
}

// ownedSocket is a unix socket this process created, as it was then.
type ownedSocket struct {
	path string
	fi   os.FileInfo
}

// removeOwned removes the sockets this process created, each only if it is
// still the one it created: not a socket another process put there since.
func (lc *Lifecycle) removeOwned() {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	for _, s := range lc.owned {
		if fi, err := os.Lstat(s.path); err == nil && os.SameFile(fi, s.fi) {
			os.Remove(s.path)
		}
	}
	lc.owned = nil
}

// Ready reports that this process serves: the pid file, systemd, and the
// process this one replaces, which then drains and exits. From then on
// SIGHUP restarts.
func (lc *Lifecycle) Ready() error {
	if lc.pidFile != "" {
		if err := writePIDFile(lc.pidFile, lc.env.pid()); err != nil {
			return fmt.Errorf("--pid-file: %w", err)
		}
	}
	if lc.upg != nil {
		if err := lc.upg.Ready(); err != nil {
			return err
		}
		lc.isReady.Store(true)
		lc.done = make(chan struct{})
		go lc.restartOnHUP(lc.hup, lc.done)
	}
	lc.notify("READY=1\nMAINPID=" + strconv.Itoa(lc.env.pid()))
	return nil
}

// restartOnHUP is the restart goroutine: each SIGHUP starts a successor;
// when one is ready, upgraded() is closed and the goroutine ends.
func (lc *Lifecycle) restartOnHUP(hup <-chan os.Signal, done <-chan struct{}) {
	for {
		select {
		case <-done:
			return
		case <-hup:
		}
		exe, _ := filepath.Abs(os.Args[0])
		lc.log.Info("SIGHUP: starting a new incpathd to take over the sockets", "exe", exe)
		lc.notify("RELOADING=1")
		if err := lc.upg.Upgrade(); err != nil {
			lc.log.Error("restart failed; this process keeps serving", "err", err)
			lc.notify("READY=1")
			continue
		}
		lc.handed.Store(true)
		close(lc.handover)
		lc.log.Info("the new incpathd is ready; draining this one")
		return
	}
}

// Upgraded is closed once a successor serves.
func (lc *Lifecycle) Upgraded() <-chan struct{} { return lc.handover }

// WasUpgraded reports whether a successor took over.
func (lc *Lifecycle) WasUpgraded() bool { return lc.handed.Load() }

// Stopping tells systemd and the restart goroutine that this process is
// going away; before the drain, so that no restart starts during it.
func (lc *Lifecycle) Stopping() {
	lc.stopOnce.Do(func() {
		// SIGHUP stays caught, and is now dropped: its default action would
		// kill the drain.
		if lc.done != nil {
			close(lc.done)
		}
	})
	if !lc.WasUpgraded() {
		lc.notify("STOPPING=1")
		if lc.upg != nil {
			lc.upg.Stop() // also unlinks the unix sockets it knows
		}
	}
}

// Close releases what this process owns: after a restart the successor
// owns the sockets and the pid file, so they stay. Unix sockets are removed
// before Close returns: the process exits right after it.
func (lc *Lifecycle) Close() {
	if lc.WasUpgraded() {
		return
	}
	switch {
	case lc.upg == nil:
		lc.removeOwned()
	case lc.upg.HasParent() && !lc.isReady.Load():
		// A successor that failed before it was ready: the sockets it took
		// over still belong to the process that started it, which serves on
		// them; Stop would unlink them. Only the ones it created go.
		lc.removeOwned()
	default:
		// Stop unlinks the unix sockets the upgrader holds, on its own
		// goroutine; Exit is closed once it has. Without the wait the
		// process often exited first and left the sockets behind.
		lc.upg.Stop()
		<-lc.upg.Exit()
	}
	for _, s := range lc.systemd {
		s.l.Close()
	}
	if lc.pidFile != "" {
		if b, err := os.ReadFile(lc.pidFile); err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(lc.env.pid()) {
			os.Remove(lc.pidFile)
		}
	}
}

// writePIDFile writes pid to path through a temporary file and a rename, so
// that systemd never reads half a number.
func writePIDFile(path string, pid int) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = fmt.Fprintf(f, "%d\n", pid)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o644)
	}
	if err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// sdSocket is a listening socket systemd passed, with its
// FileDescriptorName.
type sdSocket struct {
	name string
	l    net.Listener
}

// systemdListeners takes the sockets systemd passed (sd_listen_fds(3)):
// LISTEN_FDS descriptors from 3 on, named by LISTEN_FDNAMES, meant for
// this process only if LISTEN_PID is its pid, as systemd checks: a child
// that inherited the variables must not take its parent's descriptors. The
// variables are then removed, so that no child of ours does.
func systemdListeners(env Env) ([]sdSocket, error) {
	n, err := strconv.Atoi(env.getenv("LISTEN_FDS"))
	if err != nil || n < 1 || env.getenv("LISTEN_PID") != strconv.Itoa(env.pid()) {
		return nil, nil
	}
	names := strings.Split(env.getenv("LISTEN_FDNAMES"), ":")
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		env.unsetenv(v)
	}
	const first = 3 // SD_LISTEN_FDS_START
	var out []sdSocket
	for i := range n {
		fd := first + i
		syscall.CloseOnExec(fd)
		name := ""
		if i < len(names) {
			name = names[i]
		}
		f := os.NewFile(uintptr(fd), "systemd:"+name)
		l, err := net.FileListener(f)
		f.Close() // FileListener made its own copy
		if err != nil {
			for _, s := range out {
				s.l.Close()
			}
			return nil, fmt.Errorf("LISTEN_FDS: descriptor %d (%q) is not a listening socket: %w", fd, name, err)
		}
		out = append(out, sdSocket{name, l})
	}
	return out, nil
}

// notify sends a state to systemd's notification socket, if there is one
// (sd_notify(3)); an error is not worth failing over.
func (lc *Lifecycle) notify(state string) {
	addr := lc.env.getenv("NOTIFY_SOCKET")
	if addr == "" {
		return
	}
	if addr[0] == '@' {
		addr = "\x00" + addr[1:] // abstract namespace
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return
	}
	defer c.Close()
	c.Write([]byte(state))
}

func closeAll(ls []net.Listener) {
	for _, l := range ls {
		l.Close()
	}
}
