package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"
)

// Every command reads its flags the same way: newFlags makes the set,
// parseFlags parses the command line and then fills, from INCPATHD_*
// variables, the flags the command line left unset. Subcommands share the
// daemon's variable names, so one environment file configures the daemon
// and the commands that run next to it.

// newFlags is an empty flag set for the command name ("incpathd drain"),
// writing its errors and usage to stderr.
func newFlags(name string, stderr io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SortFlags = false
	return fs
}

// envName is the environment variable that sets a flag.
func envName(flag string) string {
	return "INCPATHD_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// Where a flag's value came from, for --print-config.
const (
	fromDefault = "default"
	fromEnv     = "env"
	fromFlag    = "flag"
)

// allFlags reads every flag from the environment too: the daemon's.
var allFlags []string

// parseFlags parses args into fs, then sets each flag the command line left
// unset from its INCPATHD_* variable: every flag if env is allFlags (nil),
// else only those named in env. It returns where each set flag came from
// (fromFlag or fromEnv). pflag.ErrHelp is returned as it is.
func parseFlags(fs *pflag.FlagSet, args []string, getenv func(string) string, env ...string) (map[string]string, error) {
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	from := map[string]string{}
	var err error
	visit := func(f *pflag.Flag) {
		if f.Changed {
			from[f.Name] = fromFlag
			return
		}
		v := getenv(envName(f.Name))
		if v == "" || err != nil {
			return
		}
		if serr := fs.Set(f.Name, v); serr != nil {
			err = fmt.Errorf("invalid value %q for %s (--%s): %w", v, envName(f.Name), f.Name, serr)
			return
		}
		from[f.Name] = fromEnv
	}
	if env == nil {
		fs.VisitAll(visit)
	}
	for _, name := range env {
		f := fs.Lookup(name)
		if f == nil {
			panic("parseFlags: no flag " + name)
		}
		visit(f)
	}
	return from, err
}
