//go:build !unix

package fcgibench

import "time"

// ProcessCPU returns 0: the CPU time used is not known here.
func ProcessCPU() time.Duration { return 0 }
