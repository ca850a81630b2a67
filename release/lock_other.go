//go:build !unix

package release

// dirLock does nothing where flock(2) and directory syncs do not exist.
type dirLock struct{}

func lockDir(string) (*dirLock, error) { return &dirLock{}, nil }

func (*dirLock) sync() error { return nil }

func (*dirLock) unlock() {}
