//go:build !linux

package sapi

import "errors"

func newNotifier() (notifier, error) {
	return nil, errors.New("sapi: watching docroots needs Linux inotify")
}

func statfsType(string) (uint32, error) { return 0, nil }
