package rewrite

import (
	"strings"

	"github.com/incpathd/incpathd/fcgi"
)

// Prepared is a Config made ready to pin requests: what pinning derives
// from the Config alone is derived once, by Config.Prepare, instead of on
// every request: the default of each pinned key and the entry written for
// it, which a request copies as it is unless the search pattern occurs in
// the default, and the whole PHP_VALUE added to a request that sends none.
// A Prepared pins exactly as its Config does. It never changes and may be
// shared by goroutines; it holds a copy of the Config, so changes to the
// Config after Prepare do not reach it.
type Prepared struct {
	cfg      Config
	defaults []keyDefault // see defaultsOf
	alone    alone
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
	p.alone = p.cfg.aloneValue(p.defaults)
	return p
}

// Rewrite is Config.Rewrite with the prepared Config.
func (p *Prepared) Rewrite(dst, in []fcgi.Pair, from, to string) ([]fcgi.Pair, error) {
	dst, _, err := p.RewriteBuffer(dst, in, from, to, nil)
	return dst, err
}

// RewriteBuffer is Config.RewriteBuffer with the prepared Config.
func (p *Prepared) RewriteBuffer(dst, in []fcgi.Pair, from, to string, buf []byte) ([]fcgi.Pair, []byte, error) {
	return rewriteBuffer(&p.cfg, p.defaults, &p.alone, dst, in, from, to, buf)
}

// keyDefault is the default of one pinned key.
type keyDefault struct {
	value string
	set   bool
	// entry is key="value", when prepared and value can be written so.
	// It is what Rewrite writes for the default when the pattern does not
	// occur in value (see usable).
	entry string
	free  bool // the pattern occurs in value for no request (patternFree)
}

// usable reports whether d's entry is what Rewrite would write for it in
// a request whose pattern replacer is r: the value, with nothing to
// replace in it.
func (d *keyDefault) usable(r *replacer) bool {
	return d.entry != "" && (d.free || r.count(d.value) == 0)
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

// render writes the entries of the defaults as Rewrite would write them
// with nothing to replace. A value that cannot be written back as INI is
// left to Rewrite, which refuses it.
func (c *Config) render(defaults []keyDefault) {
	keys := c.keys()
	for k := range defaults {
		key := "include_path" // the last element: IncludePath
		if k < len(keys) {
			key = keys[k]
		}
		if d := &defaults[k]; d.set {
			d.entry, _ = formatEntry(key, d.value)
			d.free = c.patternFree(d.value)
		}
	}
}

// alone is the PHP_VALUE Rewrite adds to a request that sets neither
// PHP_VALUE nor PHP_ADMIN_VALUE, made in advance from the rendered
// entries of the defaults it is made of: IncludePath, which stands for
// include_path's default, then the pinned keys' defaults.
type alone struct {
	value string // "" when there is none, or an entry is not rendered
	parts []int  // indexes in the defaults
}

// aloneValue returns c's alone.
func (c *Config) aloneValue(defaults []keyDefault) alone {
	var a alone
	keys := c.keys()
	base := defaults[len(keys)].set
	if base {
		a.parts = append(a.parts, len(keys))
	}
	for k, key := range keys {
		if defaults[k].set && !(base && key == "include_path") {
			a.parts = append(a.parts, k)
		}
	}
	var entries []string
	for _, k := range a.parts {
		if defaults[k].entry == "" {
			return alone{}
		}
		entries = append(entries, defaults[k].entry)
	}
	a.value = strings.Join(entries, "\n")
	return a
}

// usable reports whether a's value is what Rewrite would add to a request
// without INI params whose pattern replacer is r: the pattern occurs in
// none of its parts. a may be nil (not prepared).
func (a *alone) usable(defaults []keyDefault, r *replacer) bool {
	if a == nil || a.value == "" {
		return false
	}
	for _, k := range a.parts {
		if !defaults[k].usable(r) {
			return false
		}
	}
	return true
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
