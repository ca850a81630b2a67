package main

import (
	"os"
	"path/filepath"
)

// restoreProcName gives the process back the name of the command it was
// started as. The re-exec through /proc/self/exe (reexec) leaves the kernel's
// name for the process (comm: what pgrep, pkill, top and systemd show) as
// "exe"; the demo's test found incpathd so named. /proc/self/comm is the
// main thread's name, whichever thread writes it (prctl would rename only
// the calling thread, and a goroutine does not choose its thread).
func restoreProcName() {
	name := filepath.Base(os.Args[0])
	if len(name) > 15 { // the kernel keeps 15 bytes
		name = name[:15]
	}
	if b, err := os.ReadFile("/proc/self/comm"); err == nil && string(b) == name+"\n" {
		return
	}
	os.WriteFile("/proc/self/comm", []byte(name), 0)
}
