//go:build unix

package fcgibench

import (
	"syscall"
	"time"
)

// ProcessCPU returns the user and system CPU time the process has used, or
// 0 where that is unknown.
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
