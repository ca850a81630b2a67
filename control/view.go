package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/incpathd/incpathd/fpmcall"
	"github.com/incpathd/incpathd/opcache"
)

// Opcache is what the control endpoint asks of opcache.Manager.
type Opcache interface {
	Warm(ctx context.Context, dir string) (*opcache.WarmReport, error)
	Snapshot(ctx context.Context) *opcache.Snapshot
}

// Upstream is the php-fpm side as `incpathd status` shows it.
type Upstream struct {
	Address string `json:"address"`
	// Conns are the pool's connections now.
	Conns struct {
		Open int `json:"open"`
		Idle int `json:"idle"`
		Busy int `json:"busy"`
	} `json:"connections"`
	MaxConns   int    `json:"max_conns"`
	Dials      uint64 `json:"dials"`
	DialErrors uint64 `json:"dial_errors"`
	// Pools and Actions are left for the named upstream pools and the log
	// of control actions (issue #13) to fill.
	Pools   json.RawMessage `json:"pools,omitempty"`
	Actions json.RawMessage `json:"actions,omitempty"`
}

// View is GET /status: everything `incpathd status` shows on one screen.
type View struct {
	At       time.Time         `json:"at"`
	Releases Status            `json:"releases"`
	Opcache  *opcache.Snapshot `json:"opcache,omitempty"`
	Upstream *Upstream         `json:"upstream,omitempty"`
	// InFlight is the requests being served, whatever their release.
	InFlight int64 `json:"in_flight"`
}

// Routes are the control endpoint's routes beyond GET /releases. Every
// field may be nil: its routes answer 404, or its part of the view is
// left out.
type Routes struct {
	Status   func() Status
	Opcache  Opcache
	Upstream func() *Upstream
	InFlight func() int64
	// Audit records each warm with who asked. If nil, warms are not
	// recorded.
	Audit *Audit
}

// maxWarm bounds a warm's request: waiting for fresh files, compiling,
// and a reset to make room.
const maxWarm = 10 * time.Minute

// Register adds GET /status, GET /opcache and POST /opcache/warm to mux.
func (rt Routes) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, rt.view(r.Context()))
	})
	mux.HandleFunc("GET /opcache", func(w http.ResponseWriter, r *http.Request) {
		if rt.Opcache == nil {
			http.Error(w, "opcache is not managed by this incpathd (--opcache=false)", http.StatusNotFound)
			return
		}
		writeJSON(w, http.StatusOK, rt.Opcache.Snapshot(r.Context()))
	})
	mux.HandleFunc("POST /opcache/warm", func(w http.ResponseWriter, r *http.Request) {
		if rt.Opcache == nil {
			http.Error(w, "opcache is not managed by this incpathd (--opcache=false)", http.StatusNotFound)
			return
		}
		dir := r.URL.Query().Get("release")
		if dir == "" || !strings.HasPrefix(dir, "/") {
			http.Error(w, "give release=/absolute/path", http.StatusBadRequest)
			return
		}
		http.NewResponseController(w).SetWriteDeadline(time.Now().Add(maxWarm))
		ctx, cancel := context.WithTimeout(r.Context(), maxWarm)
		defer cancel()
		rep, err := rt.Opcache.Warm(ctx, dir)
		rt.audit(r.Context(), dir, rep, err)
		switch {
		case errors.Is(err, opcache.ErrNotDirectory):
			http.Error(w, err.Error(), http.StatusBadRequest)
		case err != nil:
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		default:
			writeJSON(w, http.StatusOK, rep)
		}
	})
}

// audit records a warm: it changes what opcache holds.
func (rt Routes) audit(ctx context.Context, dir string, rep *opcache.WarmReport, err error) {
	if rt.Audit == nil {
		return
	}
	act := Action{Name: "opcache warm", Args: []string{dir}}
	if err != nil {
		act.Error = err.Error()
	} else if rep != nil {
		act.Result = fmt.Sprintf("%d files: %d compiled, %d cached", rep.Files, rep.Compiled, rep.Cached)
	}
	rt.Audit.RecordFrom(ctx, act)
}

func (rt Routes) view(ctx context.Context) View {
	v := View{At: time.Now()}
	if rt.Status != nil {
		v.Releases = rt.Status()
	}
	if rt.Opcache != nil {
		v.Opcache = rt.Opcache.Snapshot(ctx)
	}
	if rt.Upstream != nil {
		v.Upstream = rt.Upstream()
	}
	if rt.InFlight != nil {
		v.InFlight = rt.InFlight()
	}
	return v
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

// View fetches GET /status.
func (c *Client) View(ctx context.Context) (*View, error) {
	var v View
	return &v, c.getJSON(ctx, "GET", "/status", 0, &v)
}

// Warm asks the daemon to warm a release (an absolute path), waiting up
// to timeout.
func (c *Client) Warm(ctx context.Context, release string, timeout time.Duration) (*opcache.WarmReport, error) {
	var rep opcache.WarmReport
	return &rep, c.getJSON(ctx, "POST", "/opcache/warm?release="+url.QueryEscape(release), timeout, &rep)
}

// getJSON runs one request and decodes its JSON answer; timeout, if not
// zero, replaces the Client's.
func (c *Client) getJSON(ctx context.Context, method, path string, timeout time.Duration, out any) error {
	if timeout <= 0 {
		timeout = c.timeout()
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://incpathd"+path, nil)
	if err != nil {
		return err
	}
	hc := *c.client()
	hc.Timeout = 0 // ctx bounds it
	resp, err := hc.Do(req)
	if err != nil {
		return &ClientError{Addr: c.Addr, Err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return &ClientError{Addr: c.Addr, Err: err}
	}
	if resp.StatusCode != http.StatusOK {
		return &ClientError{Addr: c.Addr, Code: resp.StatusCode, Err: errors.New(strings.TrimSpace(string(body)))}
	}
	return json.Unmarshal(body, out)
}

// ClientError is a failed request to the control endpoint: Code is its
// HTTP status, 0 if none came.
type ClientError struct {
	Addr string
	Code int
	Err  error
}

func (e *ClientError) Error() string {
	if e.Code != 0 {
		return "control: " + e.Addr + ": " + http.StatusText(e.Code) + ": " + e.Err.Error()
	}
	return "control: " + e.Addr + ": " + e.Err.Error()
}

func (e *ClientError) Unwrap() error { return e.Err }

// NoOpcache reports whether err says php-fpm has no opcache.
func NoOpcache(err error) bool {
	return err != nil && strings.Contains(err.Error(), fpmcall.ErrNoOpcache.Error())
}
