package fcgi

import (
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/internal/testsupport"
)

// Apache 2.4 mod_proxy_fcgi writes the empty STDIN record of a GET after the
// params, on its own. When the handler answered before it arrived, the
// server closed at once, Apache's write failed with a broken pipe, and
// Apache answered 503 although the response had come
// (cmd/incpathd TestFrontEndApacheUnixSocket, one run in ten under -race).
// The server must take the web server's late writes, as php-fpm does.
func TestServerLingersForUnreadBody(t *testing.T) {
	testsupport.CheckGoroutines(t)
	for _, stop := range []bool{false, true} {
		ts := startServer(t, "unix", &Server{Handler: HandlerFunc(func(w *ResponseWriter, r *Request) {
			if stop {
				r.StopBody() // as the proxy does when the application answered early
			}
			w.Write([]byte("answered"))
		})})
		c := ts.dial(t)
		c.send(beginRec(1, RoleResponder, 0), paramsRecs(1)) // STDIN still to come
		resp := c.response(1)
		assert.Equal(t, "answered", resp.stdout)
		assert.Equal(t, EndRequest{0, StatusRequestComplete}, resp.end)
		c.expectClosed() // the server closed its side of the stream...

		// ...and still reads: the late record and more body are taken.
		_, err := c.nc.Write(rec(TypeStdin, 1, []byte("late body"), 0))
		require.NoError(t, err, "stop=%v", stop)
		_, err = c.nc.Write(rec(TypeStdin, 1, nil, 0))
		require.NoError(t, err, "stop=%v", stop)
		require.NoError(t, c.nc.(*net.UnixConn).CloseWrite())
		assert.Empty(t, ts.logs.String())
	}
}
