package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/incpathd/incpathd/upstream"
)

// Endpoint is the whole control endpoint: GET /releases, and with
// Upstreams GET /upstreams and POST /upstreams/use.
type Endpoint struct {
	// Status answers GET /releases. It must be set.
	Status func() Status
	// Upstreams, if not nil, are the named pools /upstreams reports and
	// switches.
	Upstreams *upstream.Set
	// Audit records the actions that change state. If nil, they are
	// recorded in one of the Endpoint's own.
	Audit *Audit
	// CheckTimeout bounds the check of the pool Use switches to. If zero,
	// 5s.
	CheckTimeout time.Duration
}

// Upstreams is the answer to GET /upstreams.
type Upstreams struct {
	Pools []upstream.PoolStatus `json:"pools"`
	// Active is the pool new requests go to; Busy counts the requests
	// still in flight on the others.
	Active string `json:"active"`
	Busy   int64  `json:"busy"`
}

// UseRequest is the body of POST /upstreams/use.
type UseRequest struct {
	Name  string `json:"name"`
	Force bool   `json:"force,omitempty"`
}

// UseResult answers POST /upstreams/use.
type UseResult struct {
	Previous string `json:"previous"`
	Active   string `json:"active"`
	Busy     int64  `json:"busy"`
}

func (e *Endpoint) checkTimeout() time.Duration {
	if e.CheckTimeout > 0 {
		return e.CheckTimeout
	}
	return 5 * time.Second
}

// Handler serves the endpoint: GET /releases, and the routes Register
// adds.
func (e *Endpoint) Handler() http.Handler {
	mux := NewMux(e.Status)
	e.Register(mux)
	return mux
}

// Register adds GET /upstreams and POST /upstreams/use to mux, when there
// are Upstreams.
func (e *Endpoint) Register(mux *http.ServeMux) {
	if e.Audit == nil {
		e.Audit = &Audit{}
	}
	if e.Upstreams != nil {
		mux.HandleFunc("GET /upstreams", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, upstreamsOf(e.Upstreams))
		})
		mux.HandleFunc("POST /upstreams/use", e.use)
	}
}

func upstreamsOf(s *upstream.Set) Upstreams {
	return Upstreams{Pools: s.Status(), Active: s.Active().Name, Busy: s.Busy()}
}

// use switches new requests to another pool and records who asked.
func (e *Endpoint) use(w http.ResponseWriter, r *http.Request) {
	var req UseRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.Name == "" {
		http.Error(w, fmt.Sprintf("control: want {\"name\": POOL, \"force\": BOOL}: %v", err), http.StatusBadRequest)
		return
	}
	act := Action{Name: "upstream use", Args: []string{req.Name}}
	if req.Force {
		act.Args = append(act.Args, "force")
	}
	prev, err := e.Upstreams.Use(r.Context(), req.Name, req.Force, e.checkTimeout())
	if err != nil {
		act.Error = err.Error()
		e.Audit.RecordFrom(r.Context(), act)
		status := http.StatusInternalServerError
		switch {
		case errors.Is(err, upstream.ErrUnknown):
			status = http.StatusNotFound
		case errors.Is(err, upstream.ErrDown):
			status = http.StatusConflict
		}
		http.Error(w, err.Error(), status)
		return
	}
	act.Result = prev.Name + " -> " + req.Name
	e.Audit.RecordFrom(r.Context(), act)
	writeJSON(w, http.StatusOK, UseResult{Previous: prev.Name, Active: req.Name, Busy: e.Upstreams.Busy()})
}

// Server is the endpoint served by ServerFor.
func (e *Endpoint) Server() *http.Server { return ServerFor(e.Handler()) }

// errorText is the text of a refusal the endpoint answered, for the client.
func errorText(body []byte) string { return strings.TrimSpace(string(body)) }

// addUpstreams fills the Status fields of the pools and the audit.
func (s *Source) addUpstreams(st *Status) {
	if s.Upstreams != nil {
		u := upstreamsOf(s.Upstreams)
		st.Upstreams = &u
	}
	st.Actions = s.Audit.Recent()
}
