package maintenance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/incpathd/incpathd/fcgi"
)

// DefaultPage is the page sent when Mode.Page is empty.
const DefaultPage = "Down for maintenance. Please try again shortly.\n"

// maxPage bounds the page read from Mode.Page; a larger one is refused
// (logged) and DefaultPage served.
const maxPage = 1 << 20

// maxDrain bounds how much of a request body is read and thrown away so
// that the connection can carry the next request; past it the connection
// is closed after the answer.
const maxDrain = 1 << 20

// Mode is an fcgi.Handler that answers requests itself while File exists
// and passes them to Next otherwise. Set its fields, then call Start; a
// Mode that was not started is always off.
type Mode struct {
	// File turns maintenance mode on while it exists. Required.
	File string
	// Page is a file whose contents are the maintenance page, read each time
	// the mode turns on (and, if it sits beside File, whenever it changes
	// while the mode is on). Its Content-Type
	// comes from its extension; text/html if unknown. If empty, DefaultPage
	// as text/plain.
	Page string
	// RetryAfter is sent as Retry-After, in whole seconds rounded up. If
	// zero, 60s.
	RetryAfter time.Duration
	// Allow lets requests whose REMOTE_ADDR is in one of these networks
	// through to Next while the mode is on, to check the site before
	// reopening it.
	Allow []netip.Prefix
	// Next serves the requests that are not answered here. Required.
	Next fcgi.Handler
	// Logger gets a line when the mode changes, when watching fails, and at
	// debug level one per answered request. If nil, slog.Default().
	Logger *slog.Logger
	// PollEvery is how often File is checked when its directory cannot be
	// watched. If zero, 1s.
	PollEvery time.Duration

	on       atomic.Bool
	answer   atomic.Pointer[[]byte] // the whole STDOUT of a maintenance answer
	answered atomic.Uint64

	mu     sync.Mutex // serialises refresh
	stop   context.CancelFunc
	done   chan struct{}
	polled atomic.Bool
}

func (m *Mode) logger() *slog.Logger {
	if m.Logger != nil {
		return m.Logger
	}
	return slog.Default()
}

func (m *Mode) retryAfter() time.Duration {
	if m.RetryAfter > 0 {
		return m.RetryAfter
	}
	return 60 * time.Second
}

func (m *Mode) pollEvery() time.Duration {
	if m.PollEvery > 0 {
		return m.PollEvery
	}
	return time.Second
}

// On reports whether maintenance mode is on.
func (m *Mode) On() bool { return m.on.Load() }

// Answered counts the requests answered with the maintenance page.
func (m *Mode) Answered() uint64 { return m.answered.Load() }

// Polling reports whether File is checked by polling because its directory
// could not be watched.
func (m *Mode) Polling() bool { return m.polled.Load() }

// Start reads the state of File and starts watching it until Close.
func (m *Mode) Start() error {
	if m.File == "" || m.Next == nil {
		return errors.New("maintenance: File and Next must be set")
	}
	m.File = filepath.Clean(m.File)
	if m.Page != "" {
		m.Page = filepath.Clean(m.Page)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.stop = cancel
	m.done = make(chan struct{})
	w, err := fsnotify.NewWatcher()
	if err == nil {
		if err = w.Add(filepath.Dir(m.File)); err != nil {
			w.Close()
		}
	}
	// Watch first, then look: a change between the two is not missed.
	m.refresh()
	if err != nil {
		m.logger().Warn("maintenance: cannot watch the directory of the maintenance file; checking it every "+m.pollEvery().String()+" instead",
			"file", m.File, "err", err)
		go m.poll(ctx)
		return nil
	}
	go m.watch(ctx, w)
	return nil
}

// Close stops watching File.
func (m *Mode) Close() error {
	if m.stop != nil {
		m.stop()
		<-m.done
		m.stop = nil
	}
	return nil
}

// watch is the watcher goroutine: any event on File or Page makes it look
// at File again. If the watch breaks (the directory went away), it falls
// back to polling.
func (m *Mode) watch(ctx context.Context, w *fsnotify.Watcher) {
	dir := filepath.Dir(m.File)
	for {
		select {
		case <-ctx.Done():
			w.Close()
			close(m.done)
			return
		case ev, ok := <-w.Events:
			if !ok {
				break
			}
			switch filepath.Clean(ev.Name) {
			case m.File, m.Page:
				m.refresh()
				continue
			case dir:
				if !ev.Has(fsnotify.Remove) && !ev.Has(fsnotify.Rename) {
					continue
				}
			default:
				continue
			}
			m.logger().Warn("maintenance: the directory of the maintenance file went away; checking the file every "+m.pollEvery().String()+" instead", "file", m.File)
		case err, ok := <-w.Errors:
			if !ok {
				break
			}
			m.logger().Warn("maintenance: watching the maintenance file failed; checking it every "+m.pollEvery().String()+" instead", "file", m.File, "err", err)
		}
		w.Close()
		m.refresh()
		m.poll(ctx)
		return
	}
}

// poll is the fallback: a stat every PollEvery.
func (m *Mode) poll(ctx context.Context) {
	m.polled.Store(true)
	defer close(m.done)
	t := time.NewTicker(m.pollEvery())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.refresh()
		}
	}
}

// refresh looks at File and Page and switches the mode.
func (m *Mode) refresh() {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, err := os.Stat(m.File)
	exists := err == nil
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		m.logger().Warn("maintenance: cannot check the maintenance file; maintenance mode stays off", "file", m.File, "err", err)
	}
	if !exists {
		if m.on.Swap(false) {
			m.logger().Info("maintenance mode off", "file", m.File)
		}
		return
	}
	m.answer.Store(m.buildAnswer())
	if !m.on.Swap(true) {
		m.logger().Info("maintenance mode on: answering every request with 503", "file", m.File, "page", m.Page)
	}
}

// buildAnswer renders the response once, so that answering costs a copy.
func (m *Mode) buildAnswer() *[]byte {
	page, ctype := []byte(DefaultPage), "text/plain; charset=utf-8"
	if m.Page != "" {
		b, err := readPage(m.Page)
		if err != nil {
			m.logger().Warn("maintenance: cannot read the maintenance page; sending the built-in one", "page", m.Page, "err", err)
		} else {
			page = b
			ctype = mime.TypeByExtension(filepath.Ext(m.Page))
			if ctype == "" {
				ctype = "text/html; charset=utf-8"
			}
		}
	}
	secs := int64((m.retryAfter() + time.Second - 1) / time.Second)
	b := make([]byte, 0, 200+len(page))
	b = append(b, "Status: 503 Service Unavailable\r\nRetry-After: "...)
	b = strconv.AppendInt(b, secs, 10)
	b = append(b, "\r\nX-Maintenance-Mode: 1\r\nContent-Type: "...)
	b = append(b, ctype...)
	b = append(b, "\r\nCache-Control: no-store\r\n\r\n"...)
	b = append(b, page...)
	return &b
}

func readPage(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPage+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxPage {
		return nil, fmt.Errorf("larger than %d bytes", maxPage)
	}
	return b, nil
}

// ServeFCGI implements fcgi.Handler.
func (m *Mode) ServeFCGI(w *fcgi.ResponseWriter, r *fcgi.Request) {
	if !m.on.Load() || m.allowed(r.Params) {
		m.Next.ServeFCGI(w, r)
		return
	}
	m.answered.Add(1)
	drain(r)
	w.Write(*m.answer.Load())
	w.End(0, fcgi.StatusRequestComplete)
	if log := m.logger(); log.Enabled(context.Background(), slog.LevelDebug) {
		log.LogAttrs(context.Background(), slog.LevelDebug, "request",
			slog.String("method", fcgi.Param(r.Params, "REQUEST_METHOD")),
			slog.String("uri", fcgi.Param(r.Params, "REQUEST_URI")),
			slog.Int("status", 503),
			slog.Bool("maintenance", true))
	}
}

// allowed reports whether REMOTE_ADDR is in Allow.
func (m *Mode) allowed(params []fcgi.Pair) bool {
	if len(m.Allow) == 0 {
		return false
	}
	a, err := netip.ParseAddr(fcgi.Param(params, "REMOTE_ADDR"))
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range m.Allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// drain reads a small request body to its end, so that the web server can
// send its next request on the connection; a large one is cut off, and the
// connection closed after the answer.
func drain(r *fcgi.Request) {
	n := 0
	for !r.Body.Done() {
		chunk, err := r.Body.Next()
		if err != nil {
			return
		}
		if n += len(chunk); n > maxDrain {
			r.StopBody()
			return
		}
	}
}

// ParseAllow parses --maintenance-allow values: networks in CIDR notation,
// or single addresses.
func ParseAllow(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%q is neither a CIDR network nor an address", s)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}
