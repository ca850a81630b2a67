package proxy

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
