package proxy

import (
	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/inflight"
)

// repinAttempts bounds how often a request is pinned again because its
// release was dropped from the cache while it was being counted.
const repinAttempts = 3

// pinCounted pins the request as pin does and counts it in flight on its
// release. The Resolver may drop the release (a flip just seen) between the
// resolution and the count; a drain that then found the release idle and no
// longer cached would let it be deleted under this request. So the cache is
// checked again after the count is visible, and a request whose release was
// dropped is pinned again: either the drain sees the count, or the request
// never uses the old release. With the same reasoning, the counter must be
// Done only after the request has ended upstream.
//
// The request counts once in Stats.Pinned, however often it was pinned.
func (p *Proxy) pinCounted(dst, in []fcgi.Pair, x *exchange) ([]fcgi.Pair, *inflight.Counter, error) {
	for attempt := 1; ; attempt++ {
		out, pin, err := p.pin(dst, in, x)
		if err != nil {
			return out, nil, err
		}
		var c *inflight.Counter
		if p.Releases != nil {
			c = p.Releases.Acquire(pin.release)
			if pin.docroot != "" && attempt < repinAttempts && p.Resolver.Stale(pin.docroot, pin.release) {
				c.Done()
				clear(out)
				dst = out[:0]
				continue
			}
		}
		if pin.release != "" {
			p.stats.Pinned.Add(1)
		}
		return out, c, nil
	}
}
