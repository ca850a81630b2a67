package fcgibench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/incpathd/incpathd/fcgi"
)

// NginxParams is the PARAMS of a GET for /index.php as nginx 1.22 sends them
// with Debian's fastcgi_params and a PHP_VALUE carrying an include_path
// through the docroot: 30 params, about 1 KiB encoded.
func NginxParams(docroot string) []fcgi.Pair {
	return []fcgi.Pair{
		{Name: "QUERY_STRING", Value: "page=2&sort=date"},
		{Name: "REQUEST_METHOD", Value: "GET"},
		{Name: "CONTENT_TYPE", Value: ""},
		{Name: "CONTENT_LENGTH", Value: ""},
		{Name: "SCRIPT_NAME", Value: "/index.php"},
		{Name: "REQUEST_URI", Value: "/blog/?page=2&sort=date"},
		{Name: "DOCUMENT_URI", Value: "/index.php"},
		{Name: "DOCUMENT_ROOT", Value: docroot},
		{Name: "SERVER_PROTOCOL", Value: "HTTP/1.1"},
		{Name: "REQUEST_SCHEME", Value: "http"},
		{Name: "GATEWAY_INTERFACE", Value: "CGI/1.1"},
		{Name: "SERVER_SOFTWARE", Value: "nginx/1.22.1"},
		{Name: "REMOTE_ADDR", Value: "127.0.0.1"},
		{Name: "REMOTE_PORT", Value: "53422"},
		{Name: "SERVER_ADDR", Value: "127.0.0.1"},
		{Name: "SERVER_PORT", Value: "8080"},
		{Name: "SERVER_NAME", Value: "www.example.org"},
		{Name: "REDIRECT_STATUS", Value: "200"},
		{Name: "SCRIPT_FILENAME", Value: docroot + "/index.php"},
		{Name: "PATH_INFO", Value: ""},
		{Name: "PHP_VALUE", Value: "include_path=\".:" + docroot + "/include:/usr/share/php\"\nmemory_limit=256M"},
		{Name: "HTTP_HOST", Value: "www.example.org"},
		{Name: "HTTP_USER_AGENT", Value: "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"},
		{Name: "HTTP_ACCEPT", Value: "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"},
		{Name: "HTTP_ACCEPT_LANGUAGE", Value: "en-US,en;q=0.5"},
		{Name: "HTTP_ACCEPT_ENCODING", Value: "gzip, deflate, br, zstd"},
		{Name: "HTTP_COOKIE", Value: "session=8f14e45fceea167a5a36dedd4bea2543; theme=dark"},
		{Name: "HTTP_UPGRADE_INSECURE_REQUESTS", Value: "1"},
		{Name: "HTTP_CONNECTION", Value: "keep-alive"},
		{Name: "HTTP_CACHE_CONTROL", Value: "max-age=0"},
	}
}

// EncodeRequest encodes the start of a responder request with FCGI_KEEP_CONN
// set: BEGIN_REQUEST and the PARAMS stream, and the empty STDIN record when
// withBody is false, all as one web server write.
func EncodeRequest(params []fcgi.Pair, withBody bool) ([]byte, error) {
	var b strings.Builder
	bw := bufio.NewWriter(&b)
	w := fcgi.NewWriter(bw)
	w.WriteBeginRequest(1, fcgi.RoleResponder, fcgi.FlagKeepConn)
	if err := w.WriteParams(1, params); err != nil {
		return nil, err
	}
	if !withBody {
		w.WriteRecord(fcgi.TypeStdin, 1, nil)
	}
	if err := w.Flush(); err != nil {
		return nil, err
	}
	return []byte(b.String()), nil
}

// Client is a web server's side of one kept FastCGI connection.
type Client struct {
	nc   net.Conn
	bw   *bufio.Writer
	w    *fcgi.Writer
	r    *fcgi.Reader
	head [256]byte
}

// Dial connects to a FastCGI server at addr: "host:port" or "unix:/path".
func Dial(addr string) (*Client, error) {
	network := "tcp"
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, addr = "unix", path
	}
	nc, err := net.Dial(network, addr)
	if err != nil {
		return nil, err
	}
	bw := bufio.NewWriterSize(nc, 64<<10)
	return &Client{nc: nc, bw: bw, w: fcgi.NewWriter(bw), r: fcgi.NewReader(nc)}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.nc.Close() }

// SetDeadline sets the connection's deadline.
func (c *Client) SetDeadline(t time.Time) error { return c.nc.SetDeadline(t) }

// Response is what came back for one request.
type Response struct {
	Stdout, Stderr int64 // bytes
	End            fcgi.EndRequest
	// Head is the start of STDOUT, up to 256 bytes, valid until the
	// client's next request.
	Head []byte
}

// ErrNoEnd is returned when the connection ends before END_REQUEST.
var ErrNoEnd = errors.New("fcgibench: connection ended before END_REQUEST")

// Do sends req, made by EncodeRequest, then bodyBytes zero bytes of STDIN
// and the empty STDIN record if req was made with a body, and reads the
// response to its END_REQUEST.
func (c *Client) Do(req []byte, bodyBytes int64) (Response, error) {
	if _, err := c.bw.Write(req); err != nil {
		return Response{}, err
	}
	if bodyBytes > 0 || !hasEmptyStdin(req) {
		for n := bodyBytes; n > 0; {
			k := min(n, int64(len(zeros)))
			if err := c.w.WriteRecord(fcgi.TypeStdin, 1, zeros[:k]); err != nil {
				return Response{}, err
			}
			n -= k
		}
		c.w.WriteRecord(fcgi.TypeStdin, 1, nil)
	}
	if err := c.bw.Flush(); err != nil {
		return Response{}, err
	}
	return c.read()
}

// hasEmptyStdin reports whether req ends with the empty STDIN record.
func hasEmptyStdin(req []byte) bool {
	n := len(req)
	return n >= fcgi.HeaderLen && req[n-fcgi.HeaderLen+1] == fcgi.TypeStdin &&
		req[n-fcgi.HeaderLen+4] == 0 && req[n-fcgi.HeaderLen+5] == 0
}

func (c *Client) read() (Response, error) {
	res := Response{Head: c.head[:0]}
	for {
		h, content, err := c.r.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return res, ErrNoEnd
			}
			return res, err
		}
		switch h.Type {
		case fcgi.TypeStdout:
			if n := len(res.Head); n < len(c.head) {
				res.Head = res.Head[:n+copy(c.head[n:], content)]
			}
			res.Stdout += int64(len(content))
		case fcgi.TypeStderr:
			res.Stderr += int64(len(content))
		case fcgi.TypeEndRequest:
			res.End, err = fcgi.ParseEndRequest(content)
			return res, err
		}
	}
}

// Load runs requests on kept connections, each connection sending its next
// request as soon as the previous answer has ended.
type Load struct {
	// Addr is the FastCGI server: "host:port" or "unix:/path".
	Addr string
	// Conns is the number of connections. If zero, 1.
	Conns int
	// Duration stops the load after this long. If zero, only Requests
	// stops it.
	Duration time.Duration
	// Requests stops each connection after this many requests. If zero,
	// only Duration stops it.
	Requests int
	// Params are each request's params. If nil, NginxParams("/srv/www").
	Params []fcgi.Pair
	// BodyBytes is the size of each request's body.
	BodyBytes int64
	// Warmup is run, unmeasured, before the measured part: connections
	// are opened and upstream pools filled.
	Warmup time.Duration
}

// Result is what a Load measured.
type Result struct {
	Requests, Errors uint64
	Elapsed          time.Duration
	StdoutBytes      int64
	// Latencies of the successful requests, sorted.
	Latencies []time.Duration
	// FirstError is the first failure, if any.
	FirstError error
}

// Rate is requests per second.
func (r *Result) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

// Percentile returns the latency below which p (0 to 1) of the requests
// finished.
func (r *Result) Percentile(p float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	i := min(int(p*float64(len(r.Latencies))), len(r.Latencies)-1)
	return r.Latencies[i]
}

// String is one line of figures.
func (r *Result) String() string {
	s := fmt.Sprintf("%d requests in %.2fs: %.0f req/s, p50 %v, p99 %v, %d errors",
		r.Requests, r.Elapsed.Seconds(), r.Rate(), r.Percentile(0.5).Round(time.Microsecond),
		r.Percentile(0.99).Round(time.Microsecond), r.Errors)
	if r.FirstError != nil {
		s += fmt.Sprintf(" (first: %v)", r.FirstError)
	}
	return s
}

// Run runs the load until Duration, Requests or ctx ends it.
func (l *Load) Run(ctx context.Context) (Result, error) {
	params := l.Params
	if params == nil {
		params = NginxParams("/srv/www")
	}
	req, err := EncodeRequest(params, l.BodyBytes > 0)
	if err != nil {
		return Result{}, err
	}
	conns := max(l.Conns, 1)
	clients := make([]*Client, 0, conns)
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	for range conns {
		c, err := Dial(l.Addr)
		if err != nil {
			return Result{}, fmt.Errorf("fcgibench: %w", err)
		}
		clients = append(clients, c)
	}
	if l.Warmup > 0 {
		wctx, cancel := context.WithTimeout(ctx, l.Warmup)
		warm := l.run(wctx, clients, req, 0, false)
		cancel()
		if warm.Errors > 0 {
			return warm, fmt.Errorf("fcgibench: warm-up: %w", warm.FirstError)
		}
	}
	if l.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, l.Duration)
		defer cancel()
	}
	return l.run(ctx, clients, req, l.Requests, true), nil
}

// run drives every client until ctx ends or each has sent n requests (n >
// 0). With cut, the end of ctx cuts requests in flight short and leaves the
// connections unusable; without, they finish.
func (l *Load) run(ctx context.Context, clients []*Client, req []byte, n int, cut bool) Result {
	results := make([]Result, len(clients))
	var wg sync.WaitGroup
	start := time.Now()
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = l.drive(ctx, c, req, n)
		}()
	}
	if cut {
		// Unblock requests in flight when the time is up.
		stop := context.AfterFunc(ctx, func() {
			for _, c := range clients {
				c.SetDeadline(time.Unix(1, 0))
			}
		})
		defer stop()
	}
	wg.Wait()
	elapsed := time.Since(start)
	var total Result
	total.Elapsed = elapsed
	for _, r := range results {
		total.Requests += r.Requests
		total.Errors += r.Errors
		total.StdoutBytes += r.StdoutBytes
		total.Latencies = append(total.Latencies, r.Latencies...)
		if total.FirstError == nil {
			total.FirstError = r.FirstError
		}
	}
	slices.Sort(total.Latencies)
	return total
}

var status5xx = []byte("Status: 5")

// drive is one connection's request loop.
func (l *Load) drive(ctx context.Context, c *Client, req []byte, n int) Result {
	var r Result
	r.Latencies = make([]time.Duration, 0, 1024)
	for i := 0; (n <= 0 || i < n) && ctx.Err() == nil; i++ {
		t := time.Now()
		res, err := c.Do(req, l.BodyBytes)
		if err != nil {
			if ctx.Err() != nil {
				// Cut off by the end of the run: neither a result nor an error.
				break
			}
			r.Errors++
			if r.FirstError == nil {
				r.FirstError = err
			}
			// The connection is out of step after a failure.
			break
		}
		if res.End.ProtocolStatus != fcgi.StatusRequestComplete || bytes.HasPrefix(res.Head, status5xx) {
			r.Errors++
			if r.FirstError == nil {
				r.FirstError = fmt.Errorf("fcgibench: answer %q, protocol status %d", res.Head, res.End.ProtocolStatus)
			}
			continue
		}
		r.Latencies = append(r.Latencies, time.Since(t))
		r.Requests++
		r.StdoutBytes += res.Stdout
	}
	return r
}

// CPUMeter reports the CPU time a benchmark's process used per operation,
// next to the wall time go test prints: on a machine shared with other
// work the wall time counts the waits for a CPU too, the CPU time does not.
type CPUMeter struct{ start time.Duration }

// StartCPU starts measuring; call it right before the benchmark loop.
func StartCPU() CPUMeter { return CPUMeter{start: ProcessCPU()} }

// Report adds the metric cpu-ns/op to b (a *testing.B) for n operations:
// the CPU time of every goroutine of the process, the garbage collector's
// included, since StartCPU.
func (m CPUMeter) Report(b interface{ ReportMetric(float64, string) }, n int) {
	if used := ProcessCPU() - m.start; used > 0 && n > 0 {
		b.ReportMetric(float64(used.Nanoseconds())/float64(n), "cpu-ns/op")
	}
}
