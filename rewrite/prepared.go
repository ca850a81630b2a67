package rewrite

import (
	"iter"
	"slices"
	"strings"

	"github.com/incpathd/incpathd/fcgi"
)

// Prepared is a Config made ready to pin requests: what pinning derives
// from the Config alone is derived once, by Config.Prepare, instead of on
// every request: the default of each pinned key and the entry written for
// it, which a request copies as it is unless the search pattern occurs in
// the default. A Prepared pins exactly as its Config does. It never
// changes and may be shared by goroutines; it holds a copy of the Config,
// so changes to the Config after Prepare do not reach it.
type Prepared struct {
	cfg      Config
	defaults []keyDefault // see defaultsOf
	alone    string       // see aloneValue
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
	return rewriteBuffer(&p.cfg, p.defaults, p.alone, dst, in, from, to, buf)
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

// aloneValue returns the PHP_VALUE Rewrite adds to a request that sets
// neither PHP_VALUE nor PHP_ADMIN_VALUE and in whose defaults the pattern
// does not occur (see aloneUsable), when every entry of it is rendered; ""
// when there is none.
func (c *Config) aloneValue(defaults []keyDefault) string {
	var entries []string
	for k := range c.aloneDefaults(defaults) {
		entries = append(entries, defaults[k].entry)
	}
	if slices.Contains(entries, "") {
		return ""
	}
	return strings.Join(entries, "\n")
}

// aloneDefaults yields the indexes in defaults of the entries of
// aloneValue, in the order Rewrite writes them: IncludePath, which stands
// for include_path's default, then the pinned keys' defaults.
func (c *Config) aloneDefaults(defaults []keyDefault) iter.Seq[int] {
	return func(yield func(int) bool) {
		keys := c.keys()
		base := defaults[len(keys)].set
		if base && !yield(len(keys)) {
			return
		}
		for k, key := range keys {
			if defaults[k].set && !(base && key == "include_path") && !yield(k) {
				return
			}
		}
	}
}

// aloneUsable reports whether aloneValue is what Rewrite would add to a
// request without INI params whose pattern replacer is r.
func (c *Config) aloneUsable(defaults []keyDefault, r *replacer) bool {
	for k := range c.aloneDefaults(defaults) {
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
