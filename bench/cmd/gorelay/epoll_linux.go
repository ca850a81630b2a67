package main

import (
	"fmt"
	"net"
	"runtime"

	"golang.org/x/sys/unix"
)

// end is one socket of a relayed pair: out holds what could not yet be
// written to it, and while it does, its peer is not read.
type end struct {
	fd   int
	peer *end
	out  []byte
}

// relayEpoll runs one epoll loop, level-triggered, over l and every
// relayed socket, on a thread of its own.
func relayEpoll(l *net.TCPListener, up *net.TCPAddr) error {
	runtime.LockOSThread()
	lf, err := l.File() // a blocking duplicate: made non-blocking below
	if err != nil {
		return err
	}
	lfd := int(lf.Fd())
	if err := unix.SetNonblock(lfd, true); err != nil {
		return err
	}
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, lfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(lfd)}); err != nil {
		return err
	}
	r := &epollRelay{ep: ep, up: up, ends: map[int]*end{}, buf: make([]byte, 16<<10)}
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(ep, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("epoll_wait: %w", err)
		}
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			if fd == lfd {
				r.accept(lfd)
				continue
			}
			e := r.ends[fd]
			if e == nil {
				continue // closed by an event before this one
			}
			if ev.Events&unix.EPOLLOUT != 0 {
				r.flush(e)
			}
			if ev.Events&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLERR) != 0 && r.ends[fd] != nil {
				r.read(e)
			}
		}
	}
}

type epollRelay struct {
	ep   int
	up   *net.TCPAddr
	ends map[int]*end
	buf  []byte
}

// accept takes every waiting connection and pairs it with one upstream.
func (r *epollRelay) accept(lfd int) {
	for {
		cfd, _, err := unix.Accept4(lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err != nil {
			return // EAGAIN: none left
		}
		ufd, err := r.dial()
		if err != nil {
			fmt.Println("gorelay:", err)
			unix.Close(cfd)
			continue
		}
		unix.SetsockoptInt(cfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1) // as Go's sockets are
		c, u := &end{fd: cfd}, &end{fd: ufd}
		c.peer, u.peer = u, c
		r.ends[cfd], r.ends[ufd] = c, u
		r.watch(c, unix.EPOLLIN, unix.EPOLL_CTL_ADD)
		r.watch(u, unix.EPOLLIN, unix.EPOLL_CTL_ADD)
	}
}

// dial connects to the upstream, blocking (a loopback connect is at once),
// and returns the socket non-blocking.
func (r *epollRelay) dial() (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	sa := &unix.SockaddrInet4{Port: r.up.Port}
	copy(sa.Addr[:], r.up.IP.To4())
	if err := unix.Connect(fd, sa); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("connect %s: %w", r.up, err)
	}
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	return fd, unix.SetNonblock(fd, true)
}

func (r *epollRelay) watch(e *end, events uint32, op int) {
	unix.EpollCtl(r.ep, op, e.fd, &unix.EpollEvent{Events: events, Fd: int32(e.fd)})
}

// read reads what e has and writes it to its peer; what the peer does not
// take waits in its out, and e is not read until it has gone.
func (r *epollRelay) read(e *end) {
	n, err := unix.Read(e.fd, r.buf)
	if err == unix.EAGAIN {
		return
	}
	if n <= 0 {
		r.close(e)
		return
	}
	p := e.peer
	w, err := unix.Write(p.fd, r.buf[:n])
	if err == unix.EAGAIN {
		w, err = 0, nil
	}
	if err != nil {
		r.close(e)
		return
	}
	if w < n {
		p.out = append(p.out[:0], r.buf[w:n]...)
		r.watch(p, unix.EPOLLIN|unix.EPOLLOUT, unix.EPOLL_CTL_MOD)
		r.watch(e, 0, unix.EPOLL_CTL_MOD)
	}
}

// flush writes e's out; once it is empty, e's peer is read again.
func (r *epollRelay) flush(e *end) {
	w, err := unix.Write(e.fd, e.out)
	if err == unix.EAGAIN {
		return
	}
	if err != nil {
		r.close(e)
		return
	}
	if e.out = e.out[w:]; len(e.out) == 0 {
		r.watch(e, unix.EPOLLIN, unix.EPOLL_CTL_MOD)
		r.watch(e.peer, unix.EPOLLIN, unix.EPOLL_CTL_MOD)
	}
}

// close ends both sockets of e's pair.
func (r *epollRelay) close(e *end) {
	for _, x := range []*end{e, e.peer} {
		delete(r.ends, x.fd)
		unix.Close(x.fd) // also leaves the epoll set
	}
}
