//go:build unix

package main

import (
	"errors"
	"os"
	"syscall"
)

// reexec replaces the process with the binary it runs, which stays the
// same file even if a new build has been put at its path since (Linux's
// /proc/self/exe), with argv and env.
func reexec(argv, env []string) error {
	err := syscall.Exec("/proc/self/exe", argv, env)
	if !errors.Is(err, syscall.ENOENT) {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	return syscall.Exec(exe, argv, env)
}
