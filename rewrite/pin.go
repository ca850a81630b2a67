package rewrite

import "fmt"

// PinValue returns the ini value v, a literal string as PHP would assign it,
// with every occurrence of pattern replaced by the resolved docroot to. The
// occurrences are found exactly as [Config.Rewrite] finds
// Config.SearchReplacePattern in pinned keys: a pattern starting with '/'
// only matches a whole path, or the start of one, in a ':'-separated list,
// trailing slashes ignored; any other pattern matches wherever it occurs;
// an empty pattern matches nothing.
//
// It is for callers that pin a value outside a FastCGI request, such as
// incpathd exec, which passes the pinned include_path to the php CLI.
//
// PinValue fails with [ErrDocroot] when to is not an absolute path or holds
// a NUL byte or a ".." component, and with [ErrINIValue] when the result
// cannot be written back as a double-quoted INI value (see [Entry]).
func PinValue(v, pattern, to string) (string, error) {
	toRoot, ok := cleanRoot(to)
	if !ok {
		return "", fmt.Errorf("%w: the resolved docroot %q", ErrDocroot, to)
	}
	rep := replacer{pat: pattern, to: toRoot}
	if rep.pat != "" && rep.pat[0] == '/' {
		rep.pat = trimSlashes(rep.pat)
		rep.boundary = true
	}
	out := v
	if n := rep.count(v); n > 0 {
		b := buffer{b: make([]byte, 0, len(v)+n*(len(rep.to)-len(rep.pat)))}
		rep.write(&b, v)
		out = b.String()
	}
	if !validValue(out) {
		return "", fmt.Errorf("%w: %q after pinning", ErrINIValue, out)
	}
	return out, nil
}

// Entry returns the INI entry key="v", the form in which [Config.Rewrite]
// writes pinned entries. Paths must be quoted: PHP reads an unquoted value
// as constants and operators. It fails with [ErrINIValue] when v cannot be
// written between double quotes so that PHP reads back exactly v: when it
// holds '"', '\', a line break, a NUL byte or "${".
func Entry(key, v string) (string, error) {
	e, ok := formatEntry(key, v)
	if !ok {
		return "", fmt.Errorf("%w: %s=%q", ErrINIValue, key, v)
	}
	return e, nil
}

// PatternTarget returns Config.SearchReplacePattern (or the unresolved
// docroot from, if it is empty), cleaned, and what Rewrite replaces it by
// when pinning from to to. ok is false when the pattern is not a path, or
// Rewrite would fail with ErrDocroot or ErrPattern.
func (c *Config) PatternTarget(from, to string) (pattern, target string, ok bool) {
	if c == nil {
		c = &zeroConfig
	}
	fromRoot, ok1 := cleanRoot(from)
	toRoot, ok2 := cleanRoot(to)
	pat := c.SearchReplacePattern
	if pat == "" {
		pat = fromRoot
	}
	if !ok1 || !ok2 || pat == "" || pat[0] != '/' {
		return "", "", false
	}
	pat = trimSlashes(pat)
	target, ok = patternRoot(pat, fromRoot, toRoot)
	return pat, target, ok && pat != ""
}
