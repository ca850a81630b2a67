package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/incpathd/incpathd/control"
)

const upstreamUsage = `Usage: incpathd upstream use NAME [--wait [--timeout D]] [--force] [flags]
       incpathd upstream status [--json] [flags]

use sends new requests to the pool NAME (the daemon's --upstream NAME=ADDRESS);
requests in flight finish where they are. With --wait it returns once none is
left on the other pools. A pool that does not answer is refused unless --force.

`

// upstreamCmd is `incpathd upstream use NAME | status`, over the daemon's
// control endpoint.
func upstreamCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cmd := newClientCmd("incpathd upstream", upstreamUsage, stderr)
	fs, addr := cmd.fs, cmd.addr
	wait := fs.Bool("wait", false, "use: return once no request is in flight on the other pools, so they can be stopped")
	timeout := fs.Duration("timeout", 5*time.Minute, "use --wait: give up after this long (exit 1)")
	force := fs.Bool("force", false, "use: switch even if the pool does not answer")
	asJSON := fs.Bool("json", false, "status: print the JSON the daemon answers")
	interval := fs.Duration("interval", 50*time.Millisecond, "use --wait: time between polls")
	if code, ok := cmd.parse(args, getenv); !ok {
		return code
	}
	usage := cmd.usage
	switch {
	case fs.NArg() == 0:
		return usage("give use NAME or status")
	case *addr == "":
		return usage(noControl)
	case *timeout <= 0 || *interval <= 0:
		return usage("--timeout and --interval must be positive")
	}
	c := &control.Client{Addr: *addr, Timeout: min(*timeout, 10*time.Second)}
	defer c.Close()
	switch fs.Arg(0) {
	case "status":
		if fs.NArg() != 1 {
			return usage("status takes no argument")
		}
		return upstreamStatus(ctx, c, *asJSON, stdout, stderr)
	case "use":
		if fs.NArg() != 2 || fs.Arg(1) == "" {
			return usage("name one pool: incpathd upstream use NAME")
		}
		return upstreamUse(ctx, c, fs.Arg(1), *force, *wait, *timeout, *interval, stdout, stderr)
	}
	return usage(fmt.Sprintf("unknown command %q: give use NAME or status", fs.Arg(0)))
}

func upstreamStatus(ctx context.Context, c *control.Client, asJSON bool, stdout, stderr io.Writer) int {
	u, err := c.Upstreams(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "incpathd upstream: %v\n", err)
		return 1
	}
	if asJSON {
		b, _ := json.MarshalIndent(u, "", "  ")
		fmt.Fprintf(stdout, "%s\n", b)
		return 0
	}
	poolTable(stdout, "", u.Pools)
	return 0
}

func upstreamUse(ctx context.Context, c *control.Client, name string, force, wait bool, timeout, interval time.Duration, stdout, stderr io.Writer) int {
	res, err := c.Use(ctx, name, force)
	if err != nil {
		fmt.Fprintf(stderr, "incpathd upstream: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "incpathd upstream: new requests go to %s (before: %s)\n", res.Active, res.Previous)
	if !wait {
		return 0
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	busy, shown := res.Busy, int64(-1)
	for {
		if busy == 0 {
			fmt.Fprintf(stdout, "incpathd upstream: no request in flight on the other pools\n")
			return 0
		}
		if busy != shown {
			fmt.Fprintf(stderr, "incpathd upstream: waiting for %d %s in flight on the other pools\n", busy, plural(busy))
			shown = busy
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			fmt.Fprintf(stderr, "incpathd upstream: timed out after %v: %d %s still in flight on the other pools\n", timeout, busy, plural(busy))
			return 1
		case <-t.C:
		}
		u, err := c.Upstreams(ctx)
		if err != nil {
			if ctx.Err() != nil {
				continue // reported as the timeout above
			}
			fmt.Fprintf(stderr, "incpathd upstream: %v\n", err)
			return 1
		}
		if u.Active != res.Active {
			fmt.Fprintf(stderr, "incpathd upstream: %s is active now: another use switched it\n", u.Active)
			return 1
		}
		busy = u.Busy
	}
}

func plural(n int64) string {
	if n == 1 {
		return "request"
	}
	return "requests"
}
