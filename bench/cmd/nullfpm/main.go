// Command nullfpm is a FastCGI application server that answers every request
// at once: the upstream of bench/null-upstream.sh and bench/memory.sh, so
// that what they measure is incpathd rather than PHP.
//
// It answers with a hello-world page, or with N bytes when the request
// carries the param NULLAPP_RESPONSE_BYTES=N; request bodies are read and
// thrown away. It prints "listening on ADDR" once it accepts connections and
// runs until SIGTERM or SIGINT.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/incpathd/incpathd/internal/fcgibench"
)

func main() {
	listen := pflag.String("listen", "127.0.0.1:0", "address: host:port or unix:/path")
	pflag.Parse()
	network, addr := "tcp", *listen
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, addr = "unix", path
		os.Remove(path)
	}
	l, err := net.Listen(network, addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "nullfpm: %v\n", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var app fcgibench.NullApp
	go func() {
		<-ctx.Done()
		app.Close()
	}()
	fmt.Printf("listening on %s\n", l.Addr())
	if err := app.Serve(l); err != nil && err != fcgibench.ErrClosed {
		fmt.Fprintf(os.Stderr, "nullfpm: %v\n", err)
		os.Exit(1)
	}
}
