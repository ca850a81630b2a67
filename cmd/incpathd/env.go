package main

import (
	"fmt"

	"github.com/spf13/pflag"
)

// setFromEnv sets each flag of fs named in names that the command line left
// unset from its INCPATHD_* variable, as parse does for every daemon flag:
// the command line wins. Subcommands share the daemon's variable names, so
// one environment file can configure the daemon and the commands that run
// next to it.
func setFromEnv(fs *pflag.FlagSet, getenv func(string) string, names ...string) error {
	for _, name := range names {
		f := fs.Lookup(name)
		if f == nil {
			panic("setFromEnv: no flag " + name)
		}
		v := getenv(envName(name))
		if f.Changed || v == "" {
			continue
		}
		if err := fs.Set(name, v); err != nil {
			return fmt.Errorf("invalid value %q for %s (--%s): %w", v, envName(name), name, err)
		}
	}
	return nil
}
