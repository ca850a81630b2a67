// Command fcgiload plays a web server: it sends FastCGI requests with nginx's
// params on kept connections, each connection sending its next request as
// soon as the last answer ended, and prints what it measured as one line of
// key=value pairs:
//
//	requests=512340 seconds=10.00 rate=51234 p50_us=95 p99_us=310 errors=0 stdout_bytes=...
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/spf13/pflag"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/internal/fcgibench"
)

func main() {
	var (
		addr          = pflag.String("addr", "127.0.0.1:9001", "FastCGI server: host:port or unix:/path")
		conns         = pflag.IntP("conns", "c", 8, "connections")
		duration      = pflag.DurationP("duration", "d", 5*time.Second, "how long to send requests (0: until --requests)")
		requests      = pflag.IntP("requests", "n", 0, "requests per connection (0: until --duration)")
		warmup        = pflag.Duration("warmup", time.Second, "unmeasured load first")
		docroot       = pflag.String("docroot", "/srv/www", "DOCUMENT_ROOT of the requests")
		bodyBytes     = pflag.Int64("body-bytes", 0, "request body size")
		responseBytes = pflag.Int64("response-bytes", -1, "ask nullfpm for a response of this many bytes")
	)
	pflag.Parse()
	params := fcgibench.NginxParams(*docroot)
	if *bodyBytes > 0 {
		for i := range params {
			switch params[i].Name {
			case "REQUEST_METHOD":
				params[i].Value = "POST"
			case "CONTENT_LENGTH":
				params[i].Value = strconv.FormatInt(*bodyBytes, 10)
			case "CONTENT_TYPE":
				params[i].Value = "application/octet-stream"
			}
		}
	}
	if *responseBytes >= 0 {
		params = append(params, fcgi.Pair{Name: fcgibench.ResponseBytesParam, Value: strconv.FormatInt(*responseBytes, 10)})
	}
	l := fcgibench.Load{
		Addr: *addr, Conns: *conns, Duration: *duration, Requests: *requests,
		Params: params, BodyBytes: *bodyBytes, Warmup: *warmup,
	}
	res, err := l.Run(context.Background())
	if err != nil {
		fmt.Fprintf(os.Stderr, "fcgiload: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("requests=%d seconds=%.2f rate=%.0f p50_us=%d p99_us=%d errors=%d stdout_bytes=%d\n",
		res.Requests, res.Elapsed.Seconds(), res.Rate(), res.Percentile(0.5).Microseconds(),
		res.Percentile(0.99).Microseconds(), res.Errors, res.StdoutBytes)
	if res.FirstError != nil {
		fmt.Fprintf(os.Stderr, "fcgiload: first error: %v\n", res.FirstError)
	}
	if res.Errors > 0 || res.Requests == 0 {
		os.Exit(1)
	}
}
