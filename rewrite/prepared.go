package rewrite

import (
	"strings"

	"github.com/incpathd/incpathd/fcgi"
)

// Prepared is a Config made ready to pin requests: what pinning derives
// from the Config alone is derived once, by Config.Prepare, instead of on
// every request: the default of each pinned key, and, for a default in
// which no pattern can occur whatever the request, the entry written for
// it. A Prepared pins exactly as its Config does. It never changes and may
// be shared by goroutines; it holds a copy of the Config, so changes to the
// Config after Prepare do not reach it.
type Prepared struct {
	cfg      Config
	defaults []keyDefault // see defaultsOf
}

// Prepare returns c prepared. A nil *Config prepares the zero Config.
func (c *Config) Prepare() *Prepared {
	p := &Prepared{}
	if c != nil {
		p.cfg = *c
	}
	p.defaults = make([]keyDefault, len(p.cfg.keys())+1)
	p.cfg.defaultsOf(p.defaults)
	p.cfg.render(p.defaults)
	return p
}

// Rewrite is Config.Rewrite with the prepared Config.
func (p *Prepared) Rewrite(dst, in []fcgi.Pair, from, to string) ([]fcgi.Pair, error) {
	dst, _, err := p.RewriteBuffer(dst, in, from, to, nil)
	return dst, err
}

// RewriteBuffer is Config.RewriteBuffer with the prepared Config.
func (p *Prepared) RewriteBuffer(dst, in []fcgi.Pair, from, to string, buf []byte) ([]fcgi.Pair, []byte, error) {
	return rewriteBuffer(&p.cfg, p.defaults, dst, in, from, to, buf)
}

// keyDefault is the default of one pinned key.
type keyDefault struct {
	value string
	set   bool
	// entry is key="value", written as it is, when no pattern can occur
	// in value; "" otherwise, and when not prepared.
	entry string
}

func (c *Config) keys() []string {
	if c.PinINI == nil {
		return DefaultPinINI
	}
	return c.PinINI
}

// defaultsOf fills defaults, zero, of one element per pinned key and one
// more: defaults[k] is the default of keys()[k], the first of c.Defaults
// for it, and the last element is IncludePath, set if not empty. Its
// entries are not rendered: Config.Rewrite finds the defaults on every
// request, and the entries would cost an allocation each.
//
// They travel as a slice of their own rather than in a struct with the
// Config: escape analysis would see the Config's strings go to the
// request's params and move the array of a struct holding both to the heap.
func (c *Config) defaultsOf(defaults []keyDefault) {
	keys := c.keys()
	if c.IncludePath != "" {
		defaults[len(keys)] = keyDefault{value: c.IncludePath, set: true}
	}
	if len(c.Defaults) == 0 {
		return
	}
	for k, key := range keys {
		for _, d := range c.Defaults {
			if d.Key == key {
				defaults[k] = keyDefault{value: d.Value, set: true}
				break
			}
		}
	}
}

// render writes the entries of the defaults in which no pattern can occur
// as Rewrite would write them. A value that cannot be written back as INI
// is left to Rewrite, which refuses it.
func (c *Config) render(defaults []keyDefault) {
	keys := c.keys()
	for k := range defaults {
		key := "include_path" // the last element: IncludePath
		if k < len(keys) {
			key = keys[k]
		}
		if d := &defaults[k]; d.set && c.patternFree(d.value) {
			d.entry, _ = formatEntry(key, d.value)
		}
	}
}

// patternFree reports whether the search pattern occurs in v for no
// request, so that pinning leaves v as it is. Without a
// SearchReplacePattern the pattern is the request's unresolved docroot,
// either the root directory, which replaces nothing, or a path, which
// holds a '/'.
func (c *Config) patternFree(v string) bool {
	pat := c.SearchReplacePattern
	if pat == "" {
		return strings.IndexByte(v, '/') < 0
	}
	if pat[0] == '/' {
		pat = trimSlashes(pat)
	}
	return pat == "" || !strings.Contains(v, pat)
}
