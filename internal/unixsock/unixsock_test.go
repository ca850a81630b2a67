package unixsock

import (
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// socketPath is a path for a socket in a new directory, short enough for
// sun_path.
func socketPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "us")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "s.sock")
}

// Issue 10, item 11: a socket is never reachable with wider permissions
// than asked, not even between bind(2) and the chmod after it. With umask
// 022 a plain bind makes the socket 0755 until the chmod.
func TestListenModeFromTheStart(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	for _, mode := range []os.FileMode{0o600, 0o660, 0o666} {
		path := socketPath(t)
		var bound os.FileMode
		testHookBound = func(p string) {
			fi, err := os.Lstat(p)
			require.NoError(t, err)
			bound = fi.Mode().Perm()
		}
		l, err := Listen(path, mode)
		testHookBound = nil
		require.NoError(t, err)
		assert.Zero(t, bound&^mode, "mode %o: the socket was %o before its chmod", mode, bound)
		fi, err := os.Lstat(path)
		require.NoError(t, err)
		assert.Equal(t, os.ModeSocket, fi.Mode().Type())
		assert.Equal(t, mode, fi.Mode().Perm(), "the umask does not narrow the mode asked for")
		require.NoError(t, l.Close())
		_, err = os.Lstat(path)
		assert.ErrorIs(t, err, os.ErrNotExist, "Close removes the socket")
	}
}

// Issue 10, item 11: whatever is at the path and is not a socket is
// refused and left as it was.
func TestListenRefusesWhatIsNotASocket(t *testing.T) {
	for _, tt := range []struct {
		name string
		make func(path string) error
	}{
		{"a regular file", func(p string) error { return os.WriteFile(p, []byte("keep me"), 0o644) }},
		{"a directory", func(p string) error { return os.Mkdir(p, 0o755) }},
		{"a symbolic link", func(p string) error {
			if err := os.WriteFile(p+".target", []byte("keep me"), 0o644); err != nil {
				return err
			}
			return os.Symlink(p+".target", p)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := socketPath(t)
			require.NoError(t, tt.make(path))
			before, err := os.Lstat(path)
			require.NoError(t, err)
			_, err = Listen(path, 0o600)
			require.ErrorIs(t, err, ErrNotSocket)
			assert.ErrorContains(t, err, tt.name)
			after, err := os.Lstat(path)
			require.NoError(t, err)
			assert.True(t, os.SameFile(before, after), "the path was replaced")
			assert.Equal(t, before.Mode(), after.Mode())
		})
	}
}

func TestListenLiveAndStaleSockets(t *testing.T) {
	path := socketPath(t)
	live, err := Listen(path, 0o600)
	require.NoError(t, err)
	_, err = Listen(path, 0o600)
	require.ErrorIs(t, err, ErrInUse)
	c, err := net.Dial("unix", path)
	require.NoError(t, err, "the live socket is still there")
	c.Close()

	// A crash leaves the socket file behind with nothing listening.
	live.SetUnlinkOnClose(false)
	require.NoError(t, live.Close())
	l, err := Listen(path, 0o660)
	require.NoError(t, err)
	defer l.Close()
	c, err = net.Dial("unix", path)
	require.NoError(t, err)
	c.Close()
}
