package control

import (
	"net"
	"syscall"
)

// peerCred reads SO_PEERCRED: the credentials of the process that
// connected, as of its connect(2).
func peerCred(c net.Conn) (uid, gid, pid int, ok bool) {
	sc, isSC := c.(syscall.Conn)
	if !isSC {
		return 0, 0, 0, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, 0, 0, false
	}
	var cred *syscall.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return 0, 0, 0, false
	}
	return int(cred.Uid), int(cred.Gid), int(cred.Pid), true
}
