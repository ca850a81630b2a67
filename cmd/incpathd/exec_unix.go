//go:build unix

package main

import (
	"os"
	"os/signal"
	"syscall"
)

// execReplace moves to dir and replaces the process with path. Signals
// incpathd asked to be told about go back to how they were at start first,
// so that a SIGINT or SIGHUP ignored by whoever started incpathd (a shell
// running it in the background, nohup) stays ignored in the command, as
// execve keeps ignored signals and resets caught ones.
func execReplace(path string, argv, env []string, dir string) error {
	if err := os.Chdir(dir); err != nil {
		return err
	}
	signal.Reset()
	return syscall.Exec(path, argv, env)
}
