// Package lifecycle runs incpathd's process lifecycle: the listening
// sockets (its own, systemd's, or those a previous incpathd handed over),
// restarts on SIGHUP without a refused connection (tableflip), readiness
// for systemd (sd_notify) and the pid file. What it reads from the process
// around it comes in through Env, so that tests run it in-process.
//
// A daemon builds one Lifecycle with New before it opens any socket, opens
// them all through it (FCGIListeners, MetricsListener, Listen for others
// such as the control endpoint), calls Ready once it serves, and on
// Upgraded or a signal calls Stopping, drains, and Close:
//
//	lc, err := lifecycle.New(lifecycle.Config{PIDFile: pidFile, Env: lifecycle.Env{Restartable: true}})
//	ls, err := lc.FCGIListeners("127.0.0.1:9001", 0o660)
//	... serve on ls ...
//	lc.Ready()
//	select { case <-ctx.Done(): case <-lc.Upgraded(): }
//	lc.Stopping()
//	... drain ...
//	lc.Close()
package lifecycle
