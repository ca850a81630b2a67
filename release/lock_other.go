//go:build !unix

package release

import (
	"context"
	"time"
)

// dirLock does nothing where flock(2) and directory syncs do not exist.
type dirLock struct{}

func lockDir(context.Context, string, time.Duration) (*dirLock, error) { return &dirLock{}, nil }

func (*dirLock) sync() error { return nil }

func (*dirLock) unlock() {}
