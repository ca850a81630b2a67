// Command gorelay is a TCP relay written in Go that parses nothing, the
// peer of haproxy in mode tcp in bench/e2e.sh: what one hop costs in Go
// before any FastCGI is read, with two designs.
//
//	--loop goroutines   two goroutines per connection, one per direction,
//	                    each reading into its buffer and writing it on, as
//	                    net.Conn code does (incpathd's design)
//	--loop epoll        one thread running an epoll loop over every socket,
//	                    non-blocking, as haproxy does (Linux only)
//
// Each accepted connection gets its own connection to --upstream, closed
// when either side ends. It prints "listening on ADDR" once it accepts
// connections and runs until SIGTERM or SIGINT. bench/e2e.sh runs it as
// incpathd runs: GOMAXPROCS=1 and the runtime's monitor kept awake.
package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
)

func main() {
	listen := pflag.String("listen", "127.0.0.1:0", "address, host:port")
	upstream := pflag.String("upstream", "", "address to relay to, host:port")
	loop := pflag.String("loop", "goroutines", "goroutines or epoll")
	pflag.Parse()
	if *upstream == "" {
		fail(errors.New("--upstream is required"))
	}
	up, err := net.ResolveTCPAddr("tcp", *upstream)
	if err != nil {
		fail(err)
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		fail(err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	fmt.Printf("listening on %s\n", l.Addr())
	switch *loop {
	case "goroutines":
		go relayGoroutines(l.(*net.TCPListener), up)
	case "epoll":
		go func() {
			if err := relayEpoll(l.(*net.TCPListener), up); err != nil {
				fail(err)
			}
		}()
	default:
		fail(fmt.Errorf("--loop: %q is neither goroutines nor epoll", *loop))
	}
	<-sig
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "gorelay: %v\n", err)
	os.Exit(1)
}

// relayGoroutines accepts connections until l fails and relays each on
// two goroutines.
func relayGoroutines(l *net.TCPListener, up *net.TCPAddr) {
	for {
		c, err := l.AcceptTCP()
		if err != nil {
			fail(err)
		}
		go func() {
			defer c.Close()
			u, err := net.DialTCP("tcp", nil, up)
			if err != nil {
				fmt.Fprintf(os.Stderr, "gorelay: %v\n", err)
				return
			}
			defer u.Close()
			done := make(chan struct{})
			go func() {
				pipe(u, c)
				u.CloseWrite()
				close(done)
			}()
			pipe(c, u)
			c.CloseWrite()
			<-done
		}()
	}
}

// pipe copies from src to dst until src ends or either fails, with a plain
// read and write loop: io.Copy would splice TCP to TCP in the kernel, which
// neither incpathd nor haproxy's default does.
func pipe(dst io.Writer, src io.Reader) {
	buf := make([]byte, 16<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
