//go:build unix

package release

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// dirLock is an open directory holding an exclusive flock(2).
type dirLock struct{ f *os.File }

// lockDir opens dir and takes an exclusive flock on it, waiting until ctx
// ends or timeout passes (negative: no limit). Separate opens conflict
// even within one process, so goroutines are serialised too. Where the file
// system has no flock (some NFS setups answer ENOLCK, or EBADF for a
// directory opened read-only), the lock is skipped: each rename is still
// atomic; only the previous-target record may race (see the package
// documentation).
//
// The lock is polled rather than waited for in the kernel so that the wait
// can end: a blocked flock(2) cannot be interrupted from Go, and a deploy
// script that holds a flock on the directory itself would otherwise hang
// its own activation for ever.
func lockDir(ctx context.Context, dir string, timeout time.Duration) (*dirLock, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	var expired <-chan time.Time
	if timeout >= 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	delay := time.Millisecond
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		switch err {
		case nil:
			return &dirLock{f: f}, nil
		case syscall.EINTR:
			continue
		case syscall.EWOULDBLOCK:
		default:
			return &dirLock{f: f}, nil
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("release: waiting for the lock on %s: %w", dir, ctx.Err())
		case <-expired:
			f.Close()
			return nil, fmt.Errorf("%w: %s, for %v (by another activation, or a process holding flock(2) on it)", ErrLocked, dir, timeout)
		case <-time.After(delay):
		}
		delay = min(2*delay, 10*time.Millisecond)
	}
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
