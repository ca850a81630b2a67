package unixsock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
)

var (
	// ErrNotSocket refuses a path that holds something other than a socket:
	// a typo in a flag must not delete a file.
	ErrNotSocket = errors.New("unixsock: a file that is not a socket is in the way")
	// ErrInUse refuses a socket another process still serves.
	ErrInUse = errors.New("unixsock: another process is serving it")
)

// testHookBound, if set, runs between bind(2) and the final chmod: tests
// look at the socket's mode in that window.
var testHookBound func(path string)

// Listen creates a unix socket at path with permissions mode and listens on
// it. A socket left by a crashed process (nothing answers on it) is
// replaced; a live one, or anything that is not a socket, is refused and
// left alone.
//
// The socket is never reachable with wider permissions than mode: on Linux
// the file bind(2) creates takes its permissions from the socket's inode,
// less the umask, so the socket is fchmod-ed before bind, and the path
// exists from the start with mode or less; a chmod after bind then gives it
// mode exactly (the umask may have taken bits away). Closing the listener
// removes the path, unless SetUnlinkOnClose(false) says otherwise (a restart
// that hands the socket to the next process does).
func Listen(path string, mode os.FileMode) (*net.UnixListener, error) {
	if err := makeWay(path); err != nil {
		return nil, err
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		if cerr := rc.Control(func(fd uintptr) { err = syscall.Fchmod(int(fd), uint32(mode.Perm())) }); cerr != nil {
			return cerr
		}
		return err
	}}
	l, err := lc.Listen(context.Background(), "unix", path)
	if err != nil {
		return nil, err
	}
	ul := l.(*net.UnixListener)
	if testHookBound != nil {
		testHookBound(path)
	}
	if err := os.Chmod(path, mode.Perm()); err != nil {
		ul.Close()
		return nil, fmt.Errorf("listen unix %s: %w", path, err)
	}
	return ul, nil
}

// makeWay makes way for a new socket at path: nothing there, or a stale
// socket, which it removes.
func makeWay(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listen unix %s: %w", path, err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("listen unix %s: %w (%s)", path, ErrNotSocket, describe(fi.Mode()))
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("listen unix %s: %w", path, ErrInUse)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("listen unix %s: removing the stale socket: %w", path, err)
	}
	return nil
}

func describe(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m.IsRegular():
		return "a regular file"
	case m&os.ModeSymlink != 0:
		return "a symbolic link"
	}
	return "mode " + m.String()
}
