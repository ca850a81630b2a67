//go:build !linux

package main

import (
	"errors"
	"net"
)

func relayEpoll(*net.TCPListener, *net.TCPAddr) error {
	return errors.New("--loop epoll: Linux only")
}
