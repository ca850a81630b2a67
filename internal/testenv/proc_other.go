//go:build unix && !linux

package testenv

import "syscall"

// sysProcAttr puts a server in its own process group. Only Linux can also
// signal it when the test binary dies.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

func prepareReaper() {}

func killGroup(pgid int) { _ = syscall.Kill(-pgid, syscall.SIGKILL) }

func reapGroup(int) {}

func childrenOf(int) []int { return nil }
