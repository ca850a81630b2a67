//go:build !linux

package pin

import "errors"

func newNotifier() (notifier, error) {
	return nil, errors.New("pin: watching docroots needs Linux inotify")
}

func statfsType(string) (uint32, error) { return 0, nil }
