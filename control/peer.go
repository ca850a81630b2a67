package control

import (
	"context"
	"net"
	"strconv"
)

// Peer is who connected to the control endpoint: on a unix socket the
// process's credentials as the kernel gives them (SO_PEERCRED), which the
// peer cannot forge; on TCP only its address.
type Peer struct {
	// UID, GID and PID are the peer process's; -1 when not known (TCP, or
	// a system without SO_PEERCRED).
	UID int `json:"uid"`
	GID int `json:"gid"`
	PID int `json:"pid"`
	// Remote is the TCP peer's address; empty on a unix socket.
	Remote string `json:"remote,omitempty"`
}

// String names the peer for a log line: "uid 0 (pid 1234)" or an address.
func (p Peer) String() string {
	if p.UID >= 0 {
		return "uid " + strconv.Itoa(p.UID) + " (pid " + strconv.Itoa(p.PID) + ")"
	}
	if p.Remote != "" {
		return p.Remote
	}
	return "unknown"
}

type peerKey struct{}

// ConnContext is http.Server.ConnContext for the control endpoint: it
// reads the peer's credentials once per connection, for the audit.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, peerKey{}, peerOf(c))
}

// PeerFrom returns who sent the request whose context ctx is. An action
// that changes state records it (Audit.Record).
func PeerFrom(ctx context.Context) Peer {
	if p, ok := ctx.Value(peerKey{}).(Peer); ok {
		return p
	}
	return Peer{UID: -1, GID: -1, PID: -1}
}

func peerOf(c net.Conn) Peer {
	p := Peer{UID: -1, GID: -1, PID: -1}
	if c.LocalAddr().Network() != "unix" {
		p.Remote = c.RemoteAddr().String()
		return p
	}
	if uid, gid, pid, ok := peerCred(c); ok {
		p.UID, p.GID, p.PID = uid, gid, pid
	}
	return p
}
