package fcgi

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// rawIO reads and writes a socket with raw system calls, through the
// runtime's poller as net.Conn does, but without telling the scheduler
// about each call.
//
// net.Conn's Read and Write make each read(2) and write(2) a blocking system
// call as far as the scheduler knows (entersyscall, exitsyscall), so that
// another thread could take over its P. On a non-blocking socket neither
// call ever blocks: the bookkeeping bought nothing and was about 2% of
// incpathd's CPU per request between nginx and php-fpm. A read or write
// that would block returns EAGAIN, and the poller parks the goroutine until
// the socket is ready, exactly as net.Conn does, deadlines and Close
// included.
//
// A read and a write may run at once (the abort watch reads while the
// handler writes), so each direction has its own state. The functions
// handed to RawConn are method values made once, so a call allocates
// nothing.
type rawIO struct {
	nc net.Conn // for the addresses in errors
	r  rawCall
	w  rawCall
}

// rawCall is one direction's call under way.
type rawCall struct {
	rc    syscall.RawConn
	fn    func(fd uintptr) bool
	p     []byte
	n     int
	errno syscall.Errno
}

// newRawIO returns a reader and writer for nc: rawIO for a socket, nc
// itself for anything else (a pipe in tests, a TLS wrapper).
func newRawIO(nc net.Conn) io.ReadWriter {
	switch nc.(type) {
	case *net.TCPConn, *net.UnixConn:
	default:
		return nc
	}
	rc, err := nc.(syscall.Conn).SyscallConn()
	if err != nil {
		return nc
	}
	x := &rawIO{nc: nc, r: rawCall{rc: rc}, w: rawCall{rc: rc}}
	x.r.fn, x.w.fn = x.r.read, x.w.write
	return x
}

func (x *rawIO) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r := &x.r
	r.p, r.n, r.errno = p, 0, 0
	err := r.rc.Read(r.fn)
	n, errno := r.n, r.errno
	r.p = nil
	switch {
	case err != nil:
		return n, err
	case errno != 0:
		return 0, x.opError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// opError is the error net.Conn would return for errno.
func (x *rawIO) opError(op string, errno syscall.Errno) error {
	local := x.nc.LocalAddr()
	return &net.OpError{Op: op, Net: local.Network(), Source: local, Addr: x.nc.RemoteAddr(), Err: os.NewSyscallError(op, errno)}
}

// read is one read(2): false asks the poller to wait for the socket.
func (r *rawCall) read(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&r.p[0])), uintptr(len(r.p)))
		switch e {
		case 0:
			r.n = int(n)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		r.errno = e
		return true
	}
}

func (x *rawIO) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	w := &x.w
	w.p, w.n, w.errno = p, 0, 0
	err := w.rc.Write(w.fn)
	n, errno := w.n, w.errno
	w.p = nil
	switch {
	case err != nil:
		return n, err
	case errno != 0:
		return n, x.opError("write", errno)
	}
	return n, nil
}

// write writes what is left of w.p: false asks the poller to wait until the
// socket takes more.
func (w *rawCall) write(fd uintptr) bool {
	for w.n < len(w.p) {
		rest := w.p[w.n:]
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&rest[0])), uintptr(len(rest)))
		switch e {
		case 0:
			w.n += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			w.errno = e
			return true
		}
	}
	return true
}
