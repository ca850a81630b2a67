//go:build !linux

package main

// restoreProcName has nothing to restore where reexec runs the binary by its
// own path.
func restoreProcName() {}
