package proxy

import (
	"errors"
	"io"
	"syscall"

	"github.com/incpathd/incpathd/fcgi"
)

// replayable reports whether a request that failed on a reused upstream
// connection before any answer byte may be sent again on a fresh one. The
// failure usually means php-fpm closed the kept connection before reading
// the request (a worker recycled at pm.max_requests), but it can also mean
// the worker died while running it: a replay then runs the script a second
// time. So, as nginx does for its own upstream retries since 1.9.13, a
// request whose method is not idempotent (POST, LOCK, PATCH) is not
// replayed: it gets a 502 rather than a chance of running twice. A request
// with a body is never replayed: the body was streamed, not kept.
func replayable(bodyDone bool, method string) bool {
	if !bodyDone {
		return false
	}
	switch method {
	case "POST", "LOCK", "PATCH":
		return false
	}
	return true
}

// maxAttempts bounds the tries of one replayable request: the first, the
// replay of a reused connection php-fpm had closed, and one more after a
// fresh connection was lost as php-fpm stopped.
const maxAttempts = 3

// replay decides whether a replayable request that failed before any
// answer byte on attempt (0 for the first) is sent again on a fresh
// connection:
//   - after a reused connection failed on the first attempt: php-fpm
//     closed it (a worker recycled at pm.max_requests), or is stopping;
//   - after a fresh connection was lost (reset, closed), when the pool
//     holds (fcgi.Pool.Suspect): php-fpm accepted the connection as it
//     stopped, its master still holding the socket. The replay then waits
//     in the hold until php-fpm answers again, so a stopping php-fpm is
//     not tried in a loop; at most maxAttempts in all.
func (p *Proxy) replay(pool *fcgi.Pool, attempt int, reused bool, err error) bool {
	switch {
	case attempt+1 >= maxAttempts:
		return false
	case reused && attempt == 0:
		return true
	case connLost(err):
		return pool.Suspect(err)
	}
	return false
}

// connLost reports whether err is the application server's end of a
// connection going away, not a bad answer.
func connLost(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
