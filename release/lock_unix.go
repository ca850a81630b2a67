//go:build unix

package release

import (
	"errors"
	"os"
	"syscall"
)

// dirLock is an open directory holding an exclusive flock(2).
type dirLock struct{ f *os.File }

// lockDir opens dir and waits for an exclusive flock on it. Separate opens
// conflict even within one process, so goroutines are serialised too. Where
// the file system has no flock (some NFS setups answer ENOLCK, or EBADF for
// a directory opened read-only), the lock is skipped: each rename is still
// atomic; only the previous-target record may race (see the package
// documentation).
func lockDir(dir string) (*dirLock, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			break
		}
	}
	return &dirLock{f: f}, nil
}

// sync makes the renames in the directory durable. File systems that
// cannot sync a directory (EINVAL, ENOTSUP) are left to their own devices.
func (l *dirLock) sync() error {
	err := l.f.Sync()
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) {
		return nil
	}
	return err
}

// unlock releases the lock.
func (l *dirLock) unlock() { l.f.Close() }
