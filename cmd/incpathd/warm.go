package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/incpathd/incpathd/control"
	"github.com/incpathd/incpathd/opcache"
)

const warmUsage = `Usage: incpathd warm RELEASE [--control ADDR] [--timeout 5m]

Compiles every PHP file of the release directory RELEASE into php-fpm's
opcache, through the daemon (its --control endpoint), before traffic reaches
it, and says what it compiled, what it skipped and why. Files modified less
than opcache.file_update_protection ago (2 s by default), which opcache would
not cache, are waited for (up to 10 s). When opcache has no room left, the
daemon resets it first with new requests held and the live releases warmed
again.

Exits 0 when every file that compiles is cached, 1 otherwise or when the
warm failed (php-fpm without opcache, a helper script php-fpm cannot read),
2 on a usage error. --control defaults to INCPATHD_CONTROL.

`

// warmCmd is `incpathd warm RELEASE`.
func warmCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cmd := newClientCmd("incpathd warm", warmUsage, stderr)
	fs, addr := cmd.fs, cmd.addr
	timeout := fs.Duration("timeout", 5*time.Minute, "give up after this long")
	if code, ok := cmd.parse(args, getenv); !ok {
		return code
	}
	switch {
	case fs.NArg() != 1 || fs.Arg(0) == "":
		return cmd.usage("name one release directory, e.g. incpathd warm /srv/site/releases/B")
	case *addr == "":
		return cmd.usage(noControl)
	case *timeout <= 0:
		return cmd.usage("--timeout must be positive")
	}
	ok, err := warmRelease(ctx, *addr, fs.Arg(0), *timeout, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "incpathd warm: %v\n", err)
		return 1
	}
	if !ok {
		return 1
	}
	return 0
}

// warmRelease asks the daemon at addr to warm dir and prints the report.
// ok: every file that compiles is cached.
func warmRelease(ctx context.Context, addr, dir string, timeout time.Duration, stdout io.Writer) (ok bool, err error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return false, err
	}
	c := &control.Client{Addr: addr}
	defer c.Close()
	rep, err := c.Warm(ctx, abs, timeout)
	if err != nil {
		if control.NoOpcache(err) {
			return false, fmt.Errorf("%s not warmed: php-fpm runs without opcache (%w); requests are served as before", abs, err)
		}
		return false, fmt.Errorf("%s not warmed: %w", abs, err)
	}
	printWarm(stdout, rep)
	return rep.TooNew == 0 && rep.NotCached == 0, nil
}

func printWarm(w io.Writer, r *opcache.WarmReport) {
	skipped := r.TooNew + r.Failed + r.NotCached
	fmt.Fprintf(w, "warm: %s: %d PHP files, %d compiled, %d already cached, %d skipped (%.2fs)\n",
		r.Release, r.Files, r.Compiled, r.Cached, skipped, r.Seconds)
	if skipped > 0 {
		var why []string
		for _, s := range []struct {
			n    int
			what string
		}{
			{r.TooNew, "too new for opcache.file_update_protection"},
			{r.Failed, "do not compile"},
			{r.NotCached, "not kept by opcache"},
		} {
			if s.n > 0 {
				why = append(why, fmt.Sprintf("%d %s", s.n, s.what))
			}
		}
		fmt.Fprintf(w, "  skipped: %s\n", strings.Join(why, ", "))
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "  error: %s\n", e)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	if rr := r.Reset; rr != nil {
		if rr.Error != "" {
			fmt.Fprintf(w, "  reset to make room: %s: %s\n", rr.Reason, rr.Error)
		} else {
			fmt.Fprintf(w, "  reset to make room (%s): requests held %.3fs, %d held, live releases warmed again\n", rr.Reason, rr.PauseSeconds, rr.Held)
		}
	}
}
