package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/incpathd/incpathd/control"
)

// drainSettle is how many polls in a row must find the release unused: one
// more poll, an interval later, leaves time for a request that was between
// its web server and its count (a front end that resolved the docroot
// itself, or --realpath-every 0) to show up.
const drainSettle = 2

const drainUsage = `Usage: incpathd drain RELEASE [flags]

Waits until no request in flight uses RELEASE (a release directory, or any path
at or below it) and no docroot incpathd resolves leads to it, then exits 0.
Exits 1 if that does not happen within --timeout, naming what still uses it.

`

// drain is `incpathd drain RELEASE`: it polls the daemon's control endpoint
// until no request in flight uses RELEASE and no docroot leads to it, and
// exits 0; on timeout it exits 1 and says what still uses it.
func drain(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cmd := newClientCmd("incpathd drain", drainUsage, stderr)
	fs, addr := cmd.fs, cmd.addr
	timeout := fs.Duration("timeout", 5*time.Minute, "give up after this long")
	interval := fs.Duration("interval", 100*time.Millisecond, "time between polls")
	if code, ok := cmd.parse(args, getenv); !ok {
		return code
	}
	switch {
	case fs.NArg() != 1 || fs.Arg(0) == "":
		return cmd.usage("name one release, e.g. incpathd drain /srv/site/releases/A")
	case *addr == "":
		return cmd.usage(noControl)
	case *interval <= 0 || *timeout <= 0:
		return cmd.usage("--timeout and --interval must be positive")
	}
	forms, err := releaseForms(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "incpathd drain: %v\n", err)
		return 2
	}
	release := forms[0]

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	c := &control.Client{Addr: *addr, Timeout: min(*timeout, 5*time.Second)}
	defer c.Close()
	var shown []string
	settled := 0
	for {
		why := busy(ctx, c, forms)
		if len(why) == 0 {
			if settled++; settled >= drainSettle {
				fmt.Fprintf(stdout, "incpathd drain: %s is drained: no request in flight, no docroot leads to it\n", release)
				return 0
			}
		} else {
			settled = 0
			if !slices.Equal(why, shown) {
				fmt.Fprintf(stderr, "incpathd drain: waiting for %s: %s\n", release, strings.Join(why, "; "))
				shown = why
			}
		}
		t := time.NewTimer(*interval)
		select {
		case <-ctx.Done():
			t.Stop()
			if len(why) == 0 {
				why = []string{"it was unused on the last poll, but not yet confirmed"}
			}
			what := fmt.Sprintf("timed out after %v", *timeout)
			if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				what = "interrupted"
			}
			fmt.Fprintf(stderr, "incpathd drain: %s: %s is still in use: %s\n", what, release, strings.Join(why, "; "))
			return 1
		case <-t.C:
		}
	}
}

// busy polls the control endpoint once and says what still uses the
// release: nothing, or why it cannot tell.
func busy(ctx context.Context, c *control.Client, forms []string) []string {
	st, err := c.Status(ctx)
	if err != nil {
		return []string{fmt.Sprintf("cannot read incpathd's control endpoint: %v", err)}
	}
	return st.Busy(forms...)
}

// releaseForms returns the release as an absolute, clean path and, if it
// differs and exists, its realpath: incpathd reports resolved paths.
func releaseForms(arg string) ([]string, error) {
	abs, err := filepath.Abs(arg)
	if err != nil {
		return nil, err
	}
	forms := []string{abs}
	if real, err := filepath.EvalSymlinks(abs); err == nil && real != abs {
		forms = append(forms, real)
	}
	return forms, nil
}
