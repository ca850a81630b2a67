// Package control is incpathd's local control endpoint: HTTP with JSON on a
// unix socket (mode 0600 by default) or a loopback port, off unless
// configured. It answers one question for deploy tools: which releases are
// still in use, by requests in flight or as the target of a docroot link,
// so that old releases are deleted only once nothing uses them.
//
//	GET /releases
//
//	{
//	  "releases": [{"path": "/srv/site/releases/A", "in_flight": 2}],
//	  "links": [{"docroot": "/srv/site/current", "target": "/srv/site/releases/B",
//	             "cached": "/srv/site/releases/B", "watched": true}],
//	  "resolver": {"resolutions": 3, "hits": 51234, "misses": 3, "watching": true, ...}
//	}
//
// releases lists the releases with requests in flight (by resolved
// docroot); links lists the docroots incpathd resolves, with where each
// points on disk now (target) and what new requests are pinned to until
// incpathd sees a change (cached). Client reads it; Status.Busy tells
// whether a release may go.
//
// With several php-fpm pools (upstream.Set, blue/green), two more:
//
//	GET /upstreams        the pools, which is active, requests in flight on each
//	POST /upstreams/use   {"name": "green", "force": false}: new requests go to green
//
// A pool that does not answer is refused with 409 unless forced; an
// unknown one with 404. Every action that changes state is logged and kept
// in an Audit with who asked: on a unix socket the peer's uid and pid
// from SO_PEERCRED, which the peer cannot forge; on TCP its address. The
// last ones come in the Status (actions), with the pools (upstreams).
//
// The endpoint is unauthenticated: it shows server paths and switches
// pools, so it listens only where local users with the socket's
// permissions, or loopback clients, reach it.
package control
