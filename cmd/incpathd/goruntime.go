package main

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"

	"github.com/spf13/pflag"
)

// The Go runtime settings incpathd picks for itself, so that its defaults
// are its fastest configuration (README, Performance). Measured end to end
// against haproxy in mode tcp, at 8 and 32 web server connections, the CPU
// incpathd spends per request was 1.67 and 1.69 times haproxy's with Go's
// defaults, 1.45 with GOMAXPROCS=1, 1.32 and 1.42 with only the monitor kept
// awake, and 1.10 and 1.26 with both.

// sysmonAwake is the GODEBUG setting that keeps the runtime's monitor
// thread (sysmon) from parking while every P is idle: a positive schedtrace
// period, the longest there is (24.8 days), so that the trace it also asks
// for is one scheduler line on stderr that often. A parked sysmon is woken by
// the next system call, a futex wake-up and two thread switches per request
// at low load (golang/go#18236); the runtime reads schedtrace only at start,
// hence the exec.
const sysmonAwake = "schedtrace=2147483647"

// runtimeConfig is what the Go runtime flags decide.
type runtimeConfig struct {
	gomaxprocs  int
	sysmonAwake bool
}

func addRuntimeFlags(fs *pflag.FlagSet, c *runtimeConfig) {
	fs.IntVar(&c.gomaxprocs, "gomaxprocs", 1, "threads running Go code at once; 0 keeps Go's choice (one per CPU); a GOMAXPROCS variable replaces the default")
	fs.BoolVar(&c.sysmonAwake, "sysmon-awake", true, "keep the Go runtime's monitor thread from parking between requests: incpathd starts itself again with "+sysmonAwake+" added to GODEBUG, unless GODEBUG sets schedtrace")
}

func (c *runtimeConfig) validate() error {
	if c.gomaxprocs < 0 {
		return fmt.Errorf("--gomaxprocs: %d is negative", c.gomaxprocs)
	}
	return nil
}

// runtimePlan is what tuneRuntime does: set GOMAXPROCS to procs unless it
// is 0, and start again with GODEBUG=godebug first if exec.
type runtimePlan struct {
	procs   int
	exec    bool
	godebug string
}

// planRuntime decides from the flags and the environment. A flag given on
// the command line or as INCPATHD_GOMAXPROCS wins; the GOMAXPROCS variable,
// which the runtime has applied already, wins over the default.
func planRuntime(c runtimeConfig, gomaxprocsSet bool, getenv func(string) string) runtimePlan {
	var p runtimePlan
	if gomaxprocsSet || getenv("GOMAXPROCS") == "" {
		p.procs = c.gomaxprocs
	}
	godebug := getenv("GODEBUG")
	if c.sysmonAwake && !setsSchedtrace(godebug) {
		p.exec = true
		p.godebug = sysmonAwake
		if godebug != "" {
			p.godebug = godebug + "," + sysmonAwake
		}
	}
	return p
}

// setsSchedtrace reports whether a GODEBUG value sets schedtrace, to any
// value: the user's setting stays, and the started process does not start
// again.
func setsSchedtrace(godebug string) bool {
	for kv := range strings.SplitSeq(godebug, ",") {
		if k, _, _ := strings.Cut(kv, "="); strings.TrimSpace(k) == "schedtrace" {
			return true
		}
	}
	return false
}

// tuneRuntime applies the plan to this process, before it opens anything:
// the exec keeps the pid and every inherited descriptor (systemd's
// sockets, a predecessor's), and comes back here with GODEBUG set. If the
// exec fails, incpathd goes on with the monitor as Go leaves it. Only the
// incpathd process does this; tests that call run in-process keep their
// runtime as it is.
func tuneRuntime(c runtimeConfig, gomaxprocsSet bool, log *slog.Logger) {
	if !restartable {
		return
	}
	restoreProcName()
	p := planRuntime(c, gomaxprocsSet, os.Getenv)
	if p.exec {
		err := reexec(os.Args, withGODEBUG(os.Environ(), p.godebug))
		log.Warn("cannot start again with GODEBUG set; the Go runtime's monitor may park between requests", "godebug", p.godebug, "err", err)
	}
	if p.procs > 0 {
		runtime.GOMAXPROCS(p.procs)
	}
	log.Info("go runtime", "gomaxprocs", runtime.GOMAXPROCS(0), "godebug", os.Getenv("GODEBUG"))
}

// withGODEBUG returns environ with GODEBUG set to godebug, in place of any
// GODEBUG it had. Appending would not do: with two, the runtime and
// os.Getenv read the first, so the started process would find no schedtrace
// and start again, for ever.
func withGODEBUG(environ []string, godebug string) []string {
	env := make([]string, 0, len(environ)+1)
	for _, kv := range environ {
		if !strings.HasPrefix(kv, "GODEBUG=") {
			env = append(env, kv)
		}
	}
	return append(env, "GODEBUG="+godebug)
}
