package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"

	"github.com/incpathd/incpathd/release"
)

const activateUsage = `Usage: incpathd activate RELEASE --link CURRENT [--allow-root DIR]...
       incpathd activate --rollback --link CURRENT

Points the symlink CURRENT at the release directory RELEASE atomically (a
symlink made under a temporary name and renamed over CURRENT), records the
target it replaces in CURRENT.previous, and prints both targets. The target is
relative when RELEASE lies below CURRENT's directory (releases/B). Activating
the release CURRENT already resolves to changes nothing and succeeds.

--rollback points CURRENT back at CURRENT.previous and records the target it
replaces there, so a second rollback undoes the first.

Refused, with CURRENT left as it was: CURRENT is not a symlink; RELEASE is
missing, not a directory, is CURRENT or lies below or resolves through it, or
resolves outside every --allow-root.

Activations of links in one directory take turns (flock(2) on the directory),
waiting up to 30s; a deploy script that takes a lock of its own must not take
it on that directory.

--warm first compiles RELEASE (with --rollback, the previous target) into
php-fpm's opcache through the daemon's --control endpoint, as incpathd warm
does, then flips: the first requests find it cached. A warm that fails (no
opcache, no daemon) is reported and the flip goes ahead.

--link, --allow-root and --control can also be set by INCPATHD_LINK,
INCPATHD_ALLOW_ROOT and INCPATHD_CONTROL.

`

// activate is the activate subcommand.
func activate(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	var (
		link     string
		rollback bool
		roots    []string
		warm     bool
		addr     string
		warmFor  time.Duration
	)
	fs := newFlags("incpathd activate", stderr)
	fs.StringVar(&link, "link", "", "the docroot symlink to point at RELEASE, e.g. /srv/site/current")
	fs.BoolVar(&rollback, "rollback", false, "point --link back at its previous target, kept in LINK.previous")
	fs.StringSliceVar(&roots, "allow-root", nil, "RELEASE's real path must lie at or below one of these (repeatable); give the daemon's --allow-root")
	fs.BoolVar(&warm, "warm", false, "compile the release into opcache through the daemon (--control) before the flip")
	fs.StringVar(&addr, "control", "", "the daemon's control endpoint, for --warm")
	fs.DurationVar(&warmFor, "warm-timeout", 5*time.Minute, "how long --warm may take")
	fs.Usage = func() {
		fmt.Fprint(stderr, activateUsage)
		fs.PrintDefaults()
	}
	fail := func(code int, err error) int {
		fmt.Fprintf(stderr, "incpathd activate: %v\n", err)
		return code
	}
	if _, err := parseFlags(fs, args, getenv, "link", "allow-root", "control"); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return fail(2, err)
	}
	switch {
	case link == "":
		return fail(2, errors.New("--link is required (the docroot symlink, e.g. /srv/site/current)"))
	case rollback && fs.NArg() > 0:
		return fail(2, fmt.Errorf("--rollback takes no RELEASE (got %q)", fs.Arg(0)))
	case !rollback && fs.NArg() != 1:
		return fail(2, fmt.Errorf("give exactly one RELEASE directory (got %d arguments)", fs.NArg()))
	}
	for _, r := range roots {
		if !filepath.IsAbs(r) {
			return fail(2, fmt.Errorf("--allow-root: %q is not an absolute path", r))
		}
	}
	if warm && addr == "" {
		return fail(2, fmt.Errorf("--warm needs the daemon's control endpoint: give --control or set %s", envName("control")))
	}
	if warm {
		target := fs.Arg(0)
		if rollback {
			target = link + ".previous"
		}
		if ok, err := warmRelease(ctx, addr, target, warmFor, stdout); err != nil {
			fmt.Fprintf(stderr, "incpathd activate: %v; activating anyway\n", err)
		} else if !ok {
			fmt.Fprintln(stderr, "incpathd activate: not every file is cached (see above); activating anyway")
		}
	}

	l := &release.Link{Path: link, AllowRoots: roots}
	var (
		res release.Result
		err error
	)
	if rollback {
		res, err = l.Rollback(ctx)
	} else {
		res, err = l.Activate(ctx, fs.Arg(0))
	}
	if err != nil && !res.Changed {
		return fail(1, err)
	}
	if !res.Changed {
		fmt.Fprintf(stdout, "current: %s (already active; nothing changed)\n", res.Target)
		return 0
	}
	prev := res.Previous
	if prev == "" {
		prev = "(none)"
	}
	fmt.Fprintf(stdout, "previous: %s\ncurrent: %s\n", prev, res.Target)
	if err != nil {
		// The link was flipped, but the flip may not survive a crash.
		return fail(1, err)
	}
	return 0
}
