package control

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/incpathd/incpathd/inflight"
	"github.com/incpathd/incpathd/pathsafe"
	"github.com/incpathd/incpathd/pin"
	"github.com/incpathd/incpathd/upstream"
)

// Status is the answer to GET /releases.
type Status struct {
	// Releases are the releases with requests in flight, sorted by path.
	Releases []inflight.Release `json:"releases"`
	// Links are the docroots incpathd resolves, sorted.
	Links []Link `json:"links"`
	// Resolver tells how the docroots were resolved.
	Resolver ResolverStats `json:"resolver"`
	// Upstreams are the php-fpm pools and which one is active
	// (control/endpoint.go); Actions the last control actions that
	// changed state, newest first, with who asked (control/audit.go).
	Upstreams *Upstreams `json:"upstreams,omitempty"`
	Actions   []Action   `json:"actions,omitempty"`
}

// Link is a docroot and the releases it leads to.
type Link struct {
	Docroot string `json:"docroot"`
	// Target is where the docroot resolves on disk now; empty, with Error
	// set, when it does not resolve.
	Target string `json:"target,omitempty"`
	// Cached is the release new requests for the docroot are pinned to
	// until incpathd sees a change: empty when nothing is cached.
	Cached string `json:"cached,omitempty"`
	// Watched: a change to the docroot's links is seen at once; otherwise
	// after --realpath-every.
	Watched bool   `json:"watched"`
	Error   string `json:"error,omitempty"`
}

// ResolverStats are the Resolver's and the Watcher's counters.
type ResolverStats struct {
	// Resolutions counts the times requests' docroots were resolved on
	// the file system; flat while requests flow means no path system
	// calls.
	Resolutions uint64 `json:"resolutions"`
	Hits        uint64 `json:"hits"`
	Misses      uint64 `json:"misses"`
	// Watching: inotify watches docroot links (see pin.Watcher).
	Watching     bool   `json:"watching"`
	WatchEvents  uint64 `json:"watch_events"`
	WatchForgets uint64 `json:"watch_forgets"`
}

// Source gathers a Status from the parts of a running incpathd.
type Source struct {
	Releases *inflight.Tracker // nil: nothing in flight is reported
	Resolver *pin.Resolver     // required
	Watcher  *pin.Watcher      // nil: links are the cached docroots only
	// Upstreams and Audit, if not nil, add the pools and the recent
	// control actions to the Status.
	Upstreams *upstream.Set
	Audit     *Audit
}

// Status reports what is in use now. It resolves each known docroot on the
// file system, so call it for a report, not per request.
func (s *Source) Status() Status {
	st := Status{
		Resolver: ResolverStats{
			Resolutions: s.Resolver.Resolutions(),
			Hits:        s.Resolver.Hits(),
			Misses:      s.Resolver.Misses(),
		},
	}
	// The cache first, the counts last: a request counts itself on its
	// release before it checks that the cache still holds that release
	// (pin.Pinner.Pin), so a release that left the cache before this
	// look has every request still using it counted by the time of the
	// count.
	cached := map[string]pin.Entry{}
	for _, e := range s.Resolver.Cached() {
		cached[e.Docroot] = e
	}
	var links []pin.Link
	if s.Watcher != nil {
		links = s.Watcher.Links()
		st.Resolver.Watching = s.Watcher.Watching()
		st.Resolver.WatchEvents = s.Watcher.Events()
		st.Resolver.WatchForgets = s.Watcher.Forgets()
	}
	seen := map[string]bool{}
	for _, l := range links {
		seen[l.Docroot] = true
		st.Links = append(st.Links, link(l, cached[l.Docroot]))
	}
	for d, e := range cached {
		if !seen[d] {
			target, err := s.Resolver.Lookup(d)
			st.Links = append(st.Links, link(pin.Link{Docroot: d, Target: target, Err: err}, e))
		}
	}
	slices.SortFunc(st.Links, func(a, b Link) int { return strings.Compare(a.Docroot, b.Docroot) })
	if st.Links == nil {
		st.Links = []Link{}
	}
	st.Releases = s.Releases.Snapshot()
	if st.Releases == nil {
		st.Releases = []inflight.Release{}
	}
	s.addUpstreams(&st)
	return st
}

func link(l pin.Link, e pin.Entry) Link {
	out := Link{Docroot: l.Docroot, Target: l.Target, Cached: e.Resolved, Watched: l.Watched || e.Watched}
	if l.Err != nil {
		out.Error = l.Err.Error()
	}
	return out
}

// Busy returns why release cannot be deleted yet: requests in flight on
// it or below it, or a docroot that leads to it on disk or in the cache.
// Empty means nothing in this Status uses it. release is compared by whole
// path components in each of the given forms (the path as given, its
// realpath): give absolute, clean paths.
func (s *Status) Busy(release ...string) []string {
	var why []string
	in := func(p string) bool {
		for _, r := range release {
			if r != "" && pathsafe.Within(filepath.Clean(p), filepath.Clean(r)) {
				return true
			}
		}
		return false
	}
	for _, r := range s.Releases {
		if r.InFlight > 0 && in(r.Path) {
			why = append(why, fmt.Sprintf("%d %s in flight on %s", r.InFlight, plural(r.InFlight, "request", "requests"), r.Path))
		}
	}
	for _, l := range s.Links {
		switch {
		case l.Target != "" && in(l.Target):
			why = append(why, fmt.Sprintf("%s points at it (%s)", l.Docroot, l.Target))
		case l.Cached != "" && in(l.Cached):
			why = append(why, fmt.Sprintf("new requests for %s are still pinned to it (%s) until incpathd sees the change", l.Docroot, l.Cached))
		}
	}
	return why
}

func plural(n int64, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
