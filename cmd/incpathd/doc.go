// Command incpathd is a FastCGI proxy that pins every PHP request to one
// release of a site deployed by symlink swap. See the README, and
// ARCHITECTURE.md for the request path.
//
// This package is the command only; the work is done by the packages it
// builds:
//
//   - main.go: the daemon's flags and their validation; run and dispatch
//     choose the subcommand.
//   - env.go: how every command reads its flags (newFlags, parseFlags): the
//     command line first, then INCPATHD_* variables for the flags it left
//     unset.
//   - daemon.go: newDaemon builds the object graph once, every hook wired at
//     construction (upstream pool, proxy, maintenance mode in front of it,
//     metrics and health beside it, FastCGI server), and run serves it until
//     a signal or a successor ends it. The process itself (sockets,
//     restarts, systemd, pid file) is internal/lifecycle's.
//   - control.go: the docroot watcher, the in-flight counts and the control
//     endpoint.
//   - activate.go, drain.go, exec.go, maintenance.go: the subcommands.
package main
