package proxy

import (
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/internal/fcgitest"
)

// A body-less POST that fails on a reused connection is not replayed: the
// worker may have died running it (the php-fpm kill test saw in-flight
// requests replayed), and a second run of a non-idempotent request is worse
// than a 502. A GET in the same spot is replayed.
func TestNoReplayOfNonIdempotent(t *testing.T) {
	for _, tc := range []struct {
		method   string
		replayed bool
	}{
		{"GET", true},
		{"HEAD", true},
		{"POST", false},
		{"PATCH", false},
	} {
		t.Run(tc.method, func(t *testing.T) {
			current, _, _ := site(t)
			var received atomic.Int32
			addr := fcgitest.StartRaw(t, func(n int, c net.Conn) {
				r := fcgi.NewReader(c)
				for readRequest(r) == nil {
					if received.Add(1) == 2 {
						return // the worker dies running the second request
					}
					answer(c, "ok")
				}
			})
			p := &Proxy{Pool: &fcgi.Pool{Address: addr}}
			c := fcgitest.Dial(t, front(t, p))
			res := c.Do(nginxParams(current), nil)
			require.NoError(t, res.Err)
			assert.Equal(t, "\r\nok", string(res.Stdout))

			params := nginxParams(current)
			for i := range params {
				if params[i].Name == "REQUEST_METHOD" {
					params[i].Value = tc.method
				}
			}
			res = c.Do(params, nil)
			require.NoError(t, res.Err)
			if tc.replayed {
				assert.Equal(t, "\r\nok", string(res.Stdout))
				assert.Equal(t, int32(3), received.Load(), "requests the upstream read")
				assert.Equal(t, uint64(1), p.Stats().Retries.Load())
				return
			}
			assert.True(t, strings.HasPrefix(string(res.Stdout), "Status: 502 Bad Gateway\r\n"), "%q", res.Stdout)
			assert.Equal(t, int32(2), received.Load(), "requests the upstream read")
			assert.Zero(t, p.Stats().Retries.Load())
		})
	}
}
