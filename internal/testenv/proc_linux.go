package testenv

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// prSetChildSubreaper is PR_SET_CHILD_SUBREAPER from <linux/prctl.h>.
const prSetChildSubreaper = 36

var subreaperOnce sync.Once

// sysProcAttr puts a server in its own process group, so that it can be
// stopped with its workers, and asks the kernel to send it SIGTERM, on which
// nginx and php-fpm stop their workers and exit, if the test binary dies
// without running its cleanups.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

// prepareReaper makes the test process the subreaper of its descendants:
// workers orphaned by a killed master are reparented to it instead of to
// init, so reapGroup can wait for them. Init in a container often never
// reaps.
func prepareReaper() {
	subreaperOnce.Do(func() {
		_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0)
	})
}

// killGroup sends SIGKILL to every process in process group pgid. A group
// with no members left is not an error. The group id is the reaped master's
// pid; Linux keeps that number allocated while any member of the group is
// alive, so it cannot name someone else's group.
func killGroup(pgid int) {
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// reapGroup waits for the orphaned members of process group pgid that were
// reparented to the test process. Call it only after killGroup and after the
// master itself has been reaped.
func reapGroup(pgid int) {
	for {
		_, err := syscall.Wait4(-pgid, nil, 0, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil { // ECHILD: none left
			return
		}
	}
}

// childrenOf returns the process ids whose parent is pid, from /proc.
func childrenOf(pid int) []int {
	return scanProc(func(st procStat) bool { return st.ppid == pid })
}

// procStat is what scanProc reads from /proc/PID/stat.
type procStat struct {
	pid, ppid, pgrp int
	state           byte // R, S, D, Z...
}

// readStat parses /proc/PID/stat.
func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, false
	}
	// "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 3 || len(f[0]) != 1 {
		return procStat{}, false
	}
	ppid, err1 := strconv.Atoi(f[1])
	pgrp, err2 := strconv.Atoi(f[2])
	if err1 != nil || err2 != nil {
		return procStat{}, false
	}
	return procStat{pid: pid, ppid: ppid, pgrp: pgrp, state: f[0][0]}, true
}

// scanProc returns the ids of the processes for which match is true.
func scanProc(match func(procStat) bool) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := readStat(pid); ok && match(st) {
			pids = append(pids, pid)
		}
	}
	return pids
}
