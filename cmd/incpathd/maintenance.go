package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/pflag"
)

// maintenanceCmd is "incpathd maintenance on|off|status": it creates or
// removes the --maintenance-file (or INCPATHD_MAINTENANCE_FILE) that a
// running incpathd watches.
func maintenanceCmd(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	c, err := parse(args, getenv, stderr)
	if errors.Is(err, pflag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "incpathd: %v\n", err)
		return 2
	}
	if len(c.args) != 1 {
		fmt.Fprintf(stderr, "usage: incpathd maintenance on|off|status --maintenance-file PATH\n")
		return 2
	}
	file := c.ops.maintenanceFile
	if file == "" {
		fmt.Fprintf(stderr, "incpathd: maintenance: --maintenance-file (or %s) is not set\n", envName("maintenance-file"))
		return 2
	}
	switch c.args[0] {
	case "on":
		f, err := os.OpenFile(file, os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			err = f.Close()
		}
		if err != nil {
			fmt.Fprintf(stderr, "incpathd: maintenance on: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "maintenance mode on (%s)\n", file)
	case "off":
		if err := os.Remove(file); err != nil && !errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(stderr, "incpathd: maintenance off: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "maintenance mode off (%s)\n", file)
	case "status":
		_, err := os.Stat(file)
		switch {
		case err == nil:
			fmt.Fprintf(stdout, "on (%s exists)\n", file)
		case errors.Is(err, os.ErrNotExist):
			fmt.Fprintf(stdout, "off (%s does not exist)\n", file)
		default:
			fmt.Fprintf(stderr, "incpathd: maintenance status: %v\n", err)
			return 1
		}
	default:
		fmt.Fprintf(stderr, "incpathd: maintenance: %q is not on, off or status\n", c.args[0])
		return 2
	}
	return 0
}
