package fcgi

import (
	"errors"
)

// ResponseWriter writes a request's STDOUT and STDERR records and ends it.
type ResponseWriter struct {
	c     *conn
	id    uint16
	ended bool
	err   error
}

// WriteRecord writes p as records of type t (TypeStdout or TypeStderr).
// Empty p writes nothing: End closes the streams.
func (w *ResponseWriter) WriteRecord(t uint8, p []byte) error {
	if w.err != nil {
		return w.err
	}
	if len(p) == 0 {
		return nil
	}
	w.c.wmu.Lock()
	w.err = w.c.w.WriteRecord(t, w.id, p)
	w.c.wmu.Unlock()
	return w.err
}

// Write writes p to STDOUT.
func (w *ResponseWriter) Write(p []byte) (int, error) {
	if err := w.WriteRecord(TypeStdout, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush sends what is buffered to the web server.
func (w *ResponseWriter) Flush() error {
	if w.err != nil {
		return w.err
	}
	w.c.wmu.Lock()
	w.err = w.c.w.Flush()
	w.c.wmu.Unlock()
	return w.err
}

// End closes STDOUT and writes END_REQUEST with the given statuses. The
// server calls it with (0, StatusRequestComplete) if the handler did not.
func (w *ResponseWriter) End(appStatus uint32, protoStatus uint8) error {
	if w.ended {
		return w.err
	}
	w.ended = true
	if w.err != nil {
		return w.err
	}
	w.c.wmu.Lock()
	defer w.c.wmu.Unlock()
	w.c.w.WriteRecord(TypeStdout, w.id, nil)
	w.c.w.WriteEndRequest(w.id, appStatus, protoStatus)
	w.err = w.c.w.Flush()
	return w.err
}

// Abandon ends the request without END_REQUEST and closes the connection
// after the handler returns: the way to tell the web server that a response
// already under way broke.
func (w *ResponseWriter) Abandon() {
	if !w.ended {
		w.ended = true
		w.c.wmu.Lock()
		w.c.w.Flush()
		w.c.wmu.Unlock()
		if w.err == nil {
			w.err = errAbandoned
		}
	}
}

var errAbandoned = errors.New("fcgi: response abandoned")

// Err returns the first error writing to the web server.
func (w *ResponseWriter) Err() error { return w.err }
