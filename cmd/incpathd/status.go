package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/incpathd/incpathd/control"
	"github.com/incpathd/incpathd/opcache"
	"github.com/incpathd/incpathd/upstream"
)

const statusUsage = `Usage: incpathd status [--json] [--control ADDR]

One screen to read during a deploy, from the daemon's --control endpoint:
the release each docroot is live on, the releases in use with their requests
in flight and what opcache holds of them, what is waiting to drain, opcache's
memory and hash slots, and php-fpm's side. --json prints the same as JSON
(GET /status), for scripts. --control defaults to INCPATHD_CONTROL.

`

// statusCmd is `incpathd status`.
func statusCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cmd := newClientCmd("incpathd status", statusUsage, stderr)
	fs, addr := cmd.fs, cmd.addr
	asJSON := fs.Bool("json", false, "print GET /status as JSON")
	if code, ok := cmd.parse(args, getenv); !ok {
		return code
	}
	switch {
	case fs.NArg() > 0:
		return cmd.usage(fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	case *addr == "":
		return cmd.usage(noControl)
	}
	c := &control.Client{Addr: *addr}
	defer c.Close()
	v, err := c.View(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "incpathd status: %v\n", err)
		return 1
	}
	if *asJSON {
		b, _ := json.MarshalIndent(v, "", "  ")
		fmt.Fprintf(stdout, "%s\n", b)
		return 0
	}
	printView(stdout, *addr, v)
	return 0
}

// releaseRow is one line of the releases table.
type releaseRow struct {
	path, state string
	inFlight    int64
	scripts     int64
	bytes       int64
	busy        []string
}

// rows merges the releases opcache knows with those requests run in: a
// request's release is the docroot it was pinned to, counted under the
// opcache release that holds it.
func rows(v *control.View) []*releaseRow {
	byPath := map[string]*releaseRow{}
	var out []*releaseRow
	add := func(p string) *releaseRow {
		if r := byPath[p]; r != nil {
			return r
		}
		r := &releaseRow{path: p}
		byPath[p] = r
		out = append(out, r)
		return r
	}
	if v.Opcache != nil {
		for _, r := range v.Opcache.Releases {
			row := add(r.Path)
			row.state, row.scripts, row.bytes, row.busy = r.State, r.Scripts, r.Bytes, r.Busy
		}
	}
	for _, l := range v.Releases.Links {
		if l.Target != "" && owner(byPath, l.Target) == nil {
			add(l.Target).state = opcache.StateLive
		}
	}
	for _, r := range v.Releases.Releases {
		row := owner(byPath, r.Path)
		if row == nil {
			row = add(r.Path)
			row.state = "in use"
		}
		row.inFlight += r.InFlight
	}
	order := map[string]int{opcache.StateLive: 0, opcache.StateWarmed: 1, "in use": 2, opcache.StateDraining: 3, opcache.StateDrained: 4, opcache.StateEvicted: 5}
	sort.SliceStable(out, func(i, j int) bool {
		if order[out[i].state] != order[out[j].state] {
			return order[out[i].state] < order[out[j].state]
		}
		return out[i].path < out[j].path
	})
	return out
}

// owner is the row whose path holds p, the longest.
func owner(rows map[string]*releaseRow, p string) *releaseRow {
	var best *releaseRow
	for path, r := range rows {
		if (p == path || strings.HasPrefix(p, path+"/")) && (best == nil || len(path) > len(best.path)) {
			best = r
		}
	}
	return best
}

func printView(w io.Writer, addr string, v *control.View) {
	fmt.Fprintf(w, "incpathd status  %s  %s\n\n", addr, v.At.Local().Format("15:04:05"))
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "DOCROOT\tLIVE RELEASE\tNEW REQUESTS PINNED TO\t")
	for _, l := range v.Releases.Links {
		target := l.Target
		if target == "" {
			target = "(unresolvable: " + l.Error + ")"
		}
		watched := ""
		if !l.Watched {
			watched = " (not watched: --realpath-every)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s%s\t\n", l.Docroot, target, orDash(l.Cached), watched)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "RELEASE\tSTATE\tIN FLIGHT\tOPCACHE SCRIPTS\tOPCACHE MEMORY\t")
	for _, r := range rows(v) {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t\n", r.path, r.state, r.inFlight, r.scripts, mib(r.bytes))
	}
	tw.Flush()
	var waiting []string
	for _, r := range rows(v) {
		if r.state == opcache.StateDraining {
			waiting = append(waiting, fmt.Sprintf("%s: %s", r.path, strings.Join(r.busy, "; ")))
		}
	}
	if len(waiting) > 0 {
		fmt.Fprintf(w, "\nwaiting to drain:\n  %s\n", strings.Join(waiting, "\n  "))
	}
	fmt.Fprintln(w)
	printOpcache(w, v.Opcache)
	printUpstream(w, v)
}

func printOpcache(w io.Writer, s *opcache.Snapshot) {
	switch {
	case s == nil:
		fmt.Fprintln(w, "opcache   not managed (--opcache=false)")
		return
	case s.Error != "":
		fmt.Fprintf(w, "opcache   unavailable: %s\n", s.Error)
		return
	}
	st := s.Status
	total := st.UsedMemory + st.FreeMemory + st.WastedMemory
	hit := "-"
	if st.Hits+st.Misses > 0 {
		hit = fmt.Sprintf("%.1f%%", 100*float64(st.Hits)/float64(st.Hits+st.Misses))
	}
	full := ""
	if st.CacheFull {
		full = "  CACHE FULL"
	}
	fmt.Fprintf(w, "opcache   memory %s used, %s free, %s wasted of %s   hash slots %d/%d   hit rate %s   restarts %d (manual %d, hash %d, oom %d)%s\n",
		mib(st.UsedMemory), mib(st.FreeMemory), mib(st.WastedMemory), mib(total), st.Keys, st.MaxKeys, hit,
		st.Restarts(), st.ManualRestarts, st.HashRestarts, st.OOMRestarts, full)
	if lw := s.Stats.LastWarm; lw != nil {
		fmt.Fprintf(w, "          last warm: %s, %d compiled, %d already cached, %d skipped, %.2fs\n",
			lw.Release, lw.Compiled, lw.Cached, lw.TooNew+lw.Failed+lw.NotCached, lw.Seconds)
	}
	if lr := s.Stats.LastReset; lr != nil {
		what := fmt.Sprintf("requests held %.3fs (%d held)", lr.PauseSeconds, lr.Held)
		if lr.Error != "" {
			what = "failed or called off: " + lr.Error
		}
		fmt.Fprintf(w, "          last reset: %s, %s: %s\n", lr.At.Local().Format("15:04:05"), lr.Reason, what)
	}
	if g := s.Gate; g != nil && g.Closed {
		fmt.Fprintf(w, "          REQUESTS HELD NOW for a reset: %d waiting\n", g.Held)
	}
}

func printUpstream(w io.Writer, v *control.View) {
	u := v.Upstream
	if u == nil {
		return
	}
	fmt.Fprintf(w, "upstream  %s   connections %d open (%d idle, %d busy) of %d   dials %d, failed %d   requests in flight %d\n",
		u.Address, u.Conns.Open, u.Conns.Idle, u.Conns.Busy, u.MaxConns, u.Dials, u.DialErrors, v.InFlight)
	printPools(w, u.Pools)
	printActions(w, u.Actions)
}

// printPools shows each named pool (upstream.PoolStatus) when there are
// several, or the one is down and holding requests.
func printPools(w io.Writer, raw json.RawMessage) {
	var pools []upstream.PoolStatus
	if len(raw) == 0 || json.Unmarshal(raw, &pools) != nil {
		return
	}
	if len(pools) == 1 && !pools[0].Down {
		return // the line above says it all
	}
	poolTable(w, "          ", pools)
}

// poolTable prints pools as a table, each line after indent: the screen of
// incpathd status and of incpathd upstream status.
func poolTable(w io.Writer, indent string, pools []upstream.PoolStatus) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, indent+"POOL\tADDRESS\tACTIVE\tIN FLIGHT\tREQUESTS\tCONNECTIONS\tSTATE\t")
	for _, p := range pools {
		active, state := "", "up"
		if p.Active {
			active = "*"
		}
		if p.Down {
			state = fmt.Sprintf("DOWN, %d requests held", p.Holding)
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%s\t%d\t%d\t%d (%d idle)\t%s\t\n", indent, p.Name, p.Address, active, p.InFlight, p.Requests, p.Open, p.Idle, state)
	}
	tw.Flush()
}

// printActions shows the last control actions that changed state, newest
// first, with who asked.
func printActions(w io.Writer, raw json.RawMessage) {
	var acts []control.Action
	if len(raw) == 0 || json.Unmarshal(raw, &acts) != nil || len(acts) == 0 {
		return
	}
	const shown = 5
	fmt.Fprintln(w, "\nrecent control actions:")
	for _, a := range acts[:min(len(acts), shown)] {
		what := a.Result
		if a.Error != "" {
			what = "refused: " + a.Error
		}
		fmt.Fprintf(w, "  %s  %s %s  by %s: %s\n", a.Time.Local().Format("15:04:05"), a.Name, strings.Join(a.Args, " "), a.Peer, what)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func mib(b int64) string {
	switch {
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}
