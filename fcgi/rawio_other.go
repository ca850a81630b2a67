//go:build !linux

package fcgi

import (
	"io"
	"net"
)

// newRawIO returns nc: raw system calls are used on Linux only.
func newRawIO(nc net.Conn) io.ReadWriter { return nc }
