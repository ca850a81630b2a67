package proxy

import (
	"errors"
	"strconv"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/pin"
	"github.com/incpathd/incpathd/rewrite"
)

// Error is a failure with the status the web server should see. Reason is
// what the client reads: short, without server paths; the log gets Err.
type Error struct {
	Status int
	Reason string
	Err    error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// classify is the one place an error becomes a status and a reason.
func classify(err error) (status int, reason string) {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e.Status, e.Reason
	case errors.Is(err, pin.ErrNoDocroot):
		return 500, "no DOCUMENT_ROOT from the web server"
	case errors.Is(err, pin.ErrOutsideRoot):
		return 403, "document root outside the allowed roots"
	case errors.Is(err, pin.ErrUnresolvable):
		return 503, "document root cannot be resolved"
	case errors.Is(err, rewrite.ErrUnsafePath), errors.Is(err, rewrite.ErrDocroot):
		return 400, "unsafe path in request"
	case errors.Is(err, fcgi.ErrParamTooLarge), errors.Is(err, rewrite.ErrINIValue):
		return 400, "request parameters cannot be forwarded"
	case errors.Is(err, rewrite.ErrPattern):
		return 500, "search-replace pattern cannot be pinned for this docroot"
	case errors.Is(err, fcgi.ErrPoolTimeout):
		return 503, "application server busy"
	case errors.Is(err, fcgi.ErrHoldFull):
		return 503, "application server unavailable; too many requests waiting for it"
	case errors.Is(err, fcgi.ErrDial):
		return 502, "application server unavailable"
	case errors.Is(err, fcgi.ErrAborted), errors.Is(err, fcgi.ErrClientGone), errors.Is(err, fcgi.ErrSink):
		return 499, "client closed request"
	default:
		return 502, "bad answer from the application server"
	}
}

// fail answers a request that could not be served. A response already under
// way cannot be replaced, so its connection is dropped instead; a web server
// that went away gets nothing. It returns the status to report, or 0 when
// the application's own response went out whole.
func (p *Proxy) fail(w *fcgi.ResponseWriter, r *fcgi.Request, pool *fcgi.Pool, err error) int {
	p.stats.Failed.Add(1)
	status, reason := classify(err)
	var started *startedError
	log := p.logger()
	attrs := []any{
		"status", status,
		"script", fcgi.Param(r.Params, "SCRIPT_FILENAME"),
		"docroot", fcgi.Param(r.Params, "DOCUMENT_ROOT"),
		"upstream", pool.Address,
		"err", err,
	}
	switch {
	case errors.Is(err, fcgi.ErrBodyUnread):
		log.Debug("application answered before reading the whole body", attrs...)
		return 0
	case status == 499:
		log.Info("request aborted by the web server", attrs...)
		w.Abandon()
		return status
	case errors.As(err, &started):
		log.Error("upstream failed mid-response", attrs...)
		w.Abandon()
		return status
	case status >= 500:
		log.Error("request failed", attrs...)
	default:
		log.Warn("request refused", attrs...)
	}
	b := make([]byte, 0, 160)
	b = append(b, "Status: "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, statusText(status)...)
	b = append(b, "\r\nContent-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\n\r\n"...)
	b = append(b, reason...)
	b = append(b, '\n')
	w.Write(b)
	w.End(0, fcgi.StatusRequestComplete)
	return status
}

func statusText(code int) string {
	switch code {
	case 400:
		return "Bad Request"
	case 403:
		return "Forbidden"
	case 500:
		return "Internal Server Error"
	case 502:
		return "Bad Gateway"
	case 503:
		return "Service Unavailable"
	}
	return "Error"
}
