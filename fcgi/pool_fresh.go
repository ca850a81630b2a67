package fcgi

import (
	"context"
	"time"
)

// Fresh returns a newly dialed connection, never a kept one, in one of the
// pool's slots: a health check that must prove the application server
// still accepts connections. It waits for a slot as Get does; if Get hands
// it a kept connection, that one is closed and a new one dialed in its
// place, so MaxConns holds. Give the connection back with Put or Discard
// as usual.
//
// While the application server refuses connections, Fresh holds as Get
// does (see Pool.Hold).
func (p *Pool) Fresh(ctx context.Context) (*Conn, error) {
	var held time.Time
	for {
		c, reused, err := p.getHeld(ctx, true, &held)
		if err != nil || !reused {
			return c, err
		}
		c.nc.Close()
		c, _, err = p.dial(ctx) // in the slot c held; dial frees it on failure
		if err == nil || !p.holds(ctx, err) {
			return c, err
		}
		p.markDown(err)
		if err := p.waitUp(ctx, p.holdDeadline(&held)); err != nil {
			return nil, err
		}
	}
}
