package fcgitest

import (
	"bufio"
	"net"
	"testing"
	"time"

	"github.com/incpathd/incpathd/fcgi"
)

// Client plays the web server on one FastCGI connection: one request at a
// time, request id 1.
type Client struct {
	// Conn is the connection, for tests that close or time it.
	Conn net.Conn
	// W and R write and read records on Conn, for tests that send what
	// Send does not (an abort, a body that never ends).
	W *fcgi.Writer
	R *fcgi.Reader
}

// Response is what the web server got back for one request.
type Response struct {
	Stdout, Stderr []byte
	// End is the END_REQUEST record, nil if none came.
	End *fcgi.EndRequest
	// Err is why the connection failed before END_REQUEST (io.EOF for a
	// connection closed before it), or why END_REQUEST did not parse.
	Err error
}

// Dial connects to addr over TCP and closes the connection when the test
// ends. Each request, from Send to the end of its Read, must be done
// within 20 s.
func Dial(tb testing.TB, addr string) *Client {
	tb.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	return &Client{Conn: nc, W: fcgi.NewWriter(bufio.NewWriter(nc)), R: fcgi.NewReader(nc)}
}

// Send writes a request with body as one STDIN record, then the empty one
// that ends it (at once for an empty body). keep sets FCGI_KEEP_CONN.
func (c *Client) Send(params []fcgi.Pair, body []byte, keep bool) error {
	c.Conn.SetDeadline(time.Now().Add(20 * time.Second))
	var flags uint8
	if keep {
		flags = fcgi.FlagKeepConn
	}
	c.W.WriteBeginRequest(1, fcgi.RoleResponder, flags)
	if err := c.W.WriteParams(1, params); err != nil {
		return err
	}
	if len(body) > 0 {
		c.W.WriteRecord(fcgi.TypeStdin, 1, body)
	}
	c.W.WriteRecord(fcgi.TypeStdin, 1, nil)
	return c.W.Flush()
}

// Read reads one response up to its END_REQUEST.
func (c *Client) Read() Response {
	var res Response
	for {
		h, content, err := c.R.Next()
		if err != nil {
			res.Err = err
			return res
		}
		switch h.Type {
		case fcgi.TypeStdout:
			res.Stdout = append(res.Stdout, content...)
		case fcgi.TypeStderr:
			res.Stderr = append(res.Stderr, content...)
		case fcgi.TypeEndRequest:
			end, err := fcgi.ParseEndRequest(content)
			res.End, res.Err = &end, err
			return res
		}
	}
}

// Do sends a request on the kept connection and reads its response.
func (c *Client) Do(params []fcgi.Pair, body []byte) Response {
	if err := c.Send(params, body, true); err != nil {
		return Response{Err: err}
	}
	return c.Read()
}

// Get sends a request without a body and returns its STDOUT.
func (c *Client) Get(params []fcgi.Pair) ([]byte, error) {
	res := c.Do(params, nil)
	return res.Stdout, res.Err
}
