// Package upstream holds incpathd's named php-fpm pools (blue/green) and
// which one new requests go to. A request takes the active pool once, at
// its start, and keeps it until it ends, replays included; Use switches new
// requests to another pool, and Idle tells when no request is left on the
// others, so that they can be stopped.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/incpathd/incpathd/fcgi"
)

var (
	// ErrUnknown is returned by Use for a name no pool has.
	ErrUnknown = errors.New("upstream: no such pool")
	// ErrDown is returned by Use for a pool that does not answer, unless
	// forced.
	ErrDown = errors.New("upstream: pool does not answer")
)

// DefaultName is the name of a pool given without one (--upstream ADDRESS).
const DefaultName = "default"

// Pool is one named php-fpm pool.
type Pool struct {
	// Name is how the pool is called in Use, logs and metrics.
	Name string
	// FCGI is the pool's connections. It must be set.
	FCGI *fcgi.Pool
	// Check, if not nil, tells whether the pool answers (a FastCGI round
	// trip on a new connection); Use refuses a pool it fails for. If nil,
	// a pool that is holding (its last dial was refused) counts as down.
	Check func(ctx context.Context) error

	inFlight atomic.Int64
	requests atomic.Uint64
}

// InFlight is the number of requests that took this pool and have not
// ended.
func (p *Pool) InFlight() int64 { return p.inFlight.Load() }

// Requests counts the requests that took this pool.
func (p *Pool) Requests() uint64 { return p.requests.Load() }

// Release ends a request that Acquire gave this pool.
func (p *Pool) Release() { p.inFlight.Add(-1) }

func (p *Pool) check(ctx context.Context) error {
	if p.Check != nil {
		return p.Check(ctx)
	}
	if p.FCGI.HoldStats().Down {
		return errors.New("its last connection attempt was refused")
	}
	return nil
}

// Set is the pools, one of them active. Make it with NewSet.
type Set struct {
	pools  []*Pool
	active atomic.Pointer[Pool]
	mu     sync.Mutex // one Use at a time
}

// NewSet returns the pools with the first one active. Names must be unique
// and not empty.
func NewSet(pools ...*Pool) (*Set, error) {
	if len(pools) == 0 {
		return nil, errors.New("upstream: no pool")
	}
	for i, p := range pools {
		if p.Name == "" || p.FCGI == nil {
			return nil, fmt.Errorf("upstream: pool %d has no name or no connections", i+1)
		}
		if slices.ContainsFunc(pools[:i], func(q *Pool) bool { return q.Name == p.Name }) {
			return nil, fmt.Errorf("upstream: pool %q given twice", p.Name)
		}
	}
	s := &Set{pools: pools}
	s.active.Store(pools[0])
	return s, nil
}

// Pools returns the pools in the order given.
func (s *Set) Pools() []*Pool { return s.pools }

// Active returns the pool new requests go to.
func (s *Set) Active() *Pool { return s.active.Load() }

// Lookup returns the pool called name, or nil.
func (s *Set) Lookup(name string) *Pool {
	for _, p := range s.pools {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// Acquire returns the active pool with the request counted on it; the
// caller must Release it when the request ends. A request counted on a
// pool that Use has just left is uncounted and takes the new one, so that
// once Use has returned, Idle sees every request still on the old pool.
func (s *Set) Acquire() *Pool {
	for {
		p := s.active.Load()
		if testHookAcquire != nil {
			testHookAcquire()
		}
		p.inFlight.Add(1)
		if s.active.Load() == p {
			p.requests.Add(1)
			return p
		}
		p.inFlight.Add(-1)
	}
}

// testHookAcquire, if set, runs in Acquire between reading the active
// pool and counting the request on it: where a Use can come between.
var testHookAcquire func()

// Use makes the pool called name the active one, and returns the one it
// replaces. Unless force, a pool whose check fails within timeout is
// refused with ErrDown and nothing changes.
func (s *Set) Use(ctx context.Context, name string, force bool, timeout time.Duration) (prev *Pool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.Lookup(name)
	if next == nil {
		return nil, fmt.Errorf("%w %q (pools: %s)", ErrUnknown, name, s.names())
	}
	if !force {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		err := next.check(cctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("%w: %s (%s): %w; give --force to switch anyway", ErrDown, name, next.FCGI.Address, err)
		}
	}
	return s.active.Swap(next), nil
}

func (s *Set) names() string {
	var b []byte
	for i, p := range s.pools {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, p.Name...)
	}
	return string(b)
}

// Busy returns the requests in flight on the pools other than the active
// one: zero means they can be stopped.
func (s *Set) Busy() int64 {
	active := s.Active()
	var n int64
	for _, p := range s.pools {
		if p != active {
			n += p.InFlight()
		}
	}
	return n
}

// Close closes every pool.
func (s *Set) Close() {
	for _, p := range s.pools {
		p.FCGI.Close()
	}
}

// PoolStatus is one pool as the control endpoint reports it.
type PoolStatus struct {
	Name     string `json:"name"`
	Address  string `json:"address"`
	Active   bool   `json:"active"`
	InFlight int64  `json:"in_flight"`
	Requests uint64 `json:"requests"`
	// Open and Idle are its php-fpm connections.
	Open int `json:"open"`
	Idle int `json:"idle"`
	// Down: its last dial was refused and requests are held until it
	// accepts again; Holding is how many are.
	Down    bool   `json:"down"`
	Holding int    `json:"holding"`
	Held    uint64 `json:"held"`
}

// Status reports every pool, in the order given.
func (s *Set) Status() []PoolStatus {
	active := s.Active()
	out := make([]PoolStatus, 0, len(s.pools))
	for _, p := range s.pools {
		st, h := p.FCGI.Stats(), p.FCGI.HoldStats()
		out = append(out, PoolStatus{
			Name: p.Name, Address: p.FCGI.Address, Active: p == active,
			InFlight: p.InFlight(), Requests: p.Requests(),
			Open: st.Open, Idle: st.Idle,
			Down: h.Down, Holding: h.Holding, Held: h.Held,
		})
	}
	return out
}
