package control

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Action is one control action that changed state, as the audit keeps it.
type Action struct {
	Time time.Time `json:"time"`
	// Name is the action: "upstream use", and those of other endpoints
	// ("opcache warm", "opcache reset").
	Name string `json:"action"`
	// Args are what it was asked to do, as given ("green", "force").
	Args []string `json:"args,omitempty"`
	// Peer is who asked.
	Peer Peer `json:"peer"`
	// Result is what happened ("blue -> green"); Error why it failed.
	Result string `json:"result,omitempty"`
	Error  string `json:"error,omitempty"`
}

// auditKeep is how many actions Audit keeps for the status.
const auditKeep = 32

// Audit logs every control action that changes state, with who asked, and
// keeps the last ones for the status. The zero value is ready; it is safe
// for concurrent use.
type Audit struct {
	// Logger gets one line per action. If nil, slog.Default().
	Logger *slog.Logger

	mu   sync.Mutex
	ring []Action // the last auditKeep, oldest first
}

// Record logs a and keeps it. A zero Time is set to now.
func (a *Audit) Record(act Action) {
	if act.Time.IsZero() {
		act.Time = time.Now()
	}
	log := a.Logger
	if log == nil {
		log = slog.Default()
	}
	attrs := []any{"action", act.Name, "args", act.Args, "peer", act.Peer.String(), "uid", act.Peer.UID, "pid", act.Peer.PID}
	if act.Peer.Remote != "" {
		attrs = append(attrs, "remote", act.Peer.Remote)
	}
	if act.Error != "" {
		log.Warn("control action refused", append(attrs, "err", act.Error)...)
	} else {
		log.Info("control action", append(attrs, "result", act.Result)...)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.ring) == auditKeep {
		a.ring = append(a.ring[:0], a.ring[1:]...)
	}
	a.ring = append(a.ring, act)
}

// RecordFrom is Record with the peer of the request whose context ctx is.
func (a *Audit) RecordFrom(ctx context.Context, act Action) {
	act.Peer = PeerFrom(ctx)
	a.Record(act)
}

// Recent returns the actions kept, newest first.
func (a *Audit) Recent() []Action {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Action, len(a.ring))
	for i, act := range a.ring {
		out[len(a.ring)-1-i] = act
	}
	return out
}
