package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/pflag"
)

// clientCmd is what the commands that talk to a running daemon through its
// control endpoint (drain, status, warm, upstream) share: a flag set with
// --control, which falls back to INCPATHD_CONTROL (their other flags are
// their own, not the daemon's, so no other variable is read), and one way
// of reporting a usage error.
type clientCmd struct {
	name   string // "incpathd drain"
	fs     *pflag.FlagSet
	addr   *string
	stderr io.Writer
}

// noControl is the usage error of a client command given no endpoint.
var noControl = "no control endpoint: give --control (the daemon's --control) or set " + envName("control")

// newClientCmd makes the flag set of the command name, whose --help prints
// usage, then the flags.
func newClientCmd(name, usage string, stderr io.Writer) *clientCmd {
	c := &clientCmd{name: name, fs: newFlags(name, stderr), stderr: stderr}
	c.addr = c.fs.String("control", "", "the daemon's control endpoint (its --control); default $"+envName("control"))
	c.fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		c.fs.PrintDefaults()
	}
	return c
}

// parse reads args. When it returns false the command ends at once with
// code: 0 after --help, 2 for a bad flag (already reported).
func (c *clientCmd) parse(args []string, getenv func(string) string) (code int, ok bool) {
	if _, err := parseFlags(c.fs, args, getenv, "control"); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0, false
		}
		c.usage(err.Error())
		return 2, false
	}
	return 0, true
}

// usage reports a usage error and returns the exit code for it.
func (c *clientCmd) usage(msg string) int {
	fmt.Fprintf(c.stderr, "%s: %s\n", c.name, msg)
	return 2
}
