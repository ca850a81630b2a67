package rewrite

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unsafe"

	"github.com/incpathd/incpathd/fcgi"
)

// Config says how requests are pinned. The zero value pins DOCUMENT_ROOT,
// SCRIPT_FILENAME and PATH_TRANSLATED, replaces the unresolved docroot in
// the ini keys of DefaultPinINI, adds no include_path and drops HTTP_PROXY.
// A Config is not modified by Rewrite and may be shared by goroutines.
type Config struct {
	// SearchReplacePattern is replaced by the resolved docroot in every
	// pinned ini value, as incpath's incpath.search_replace_pattern was. If
	// empty, the unresolved docroot (the from argument of Rewrite) is the
	// pattern. Trailing slashes are ignored. A pattern starting with '/' is
	// a path and only matches a whole path, or the start of one, in a
	// ':'-separated list (see the package documentation); any other
	// pattern, such as a placeholder token, matches wherever it occurs.
	SearchReplacePattern string

	// IncludePath is the include_path sent when the request carries none
	// in PHP_VALUE or PHP_ADMIN_VALUE, with the pattern replaced like a
	// request's. It exists because php-fpm keeps PHP_VALUE settings in the
	// worker after the request: a pinned include_path sent by one request
	// would otherwise stay in force, pointing at an old release, for later
	// requests that send none. Set it to the pool's include_path so every
	// request sends one. If empty, the include_path of Defaults, if any, is
	// sent instead.
	IncludePath string

	// Defaults are the values the keys of PinINI get on a request that
	// sets them in neither PHP_VALUE nor PHP_ADMIN_VALUE, with the pattern
	// replaced like a request's, for the reason given for IncludePath,
	// which holds for every key: php-fpm writes PHP_VALUE and
	// PHP_ADMIN_VALUE entries into the worker's master ini table, and
	// nothing restores them. They go in PHP_VALUE, which changes a key's
	// value whatever set it (php-fpm does not check who may) without
	// locking it against ini_set as PHP_ADMIN_VALUE would. Values are
	// literal strings, as PHP holds them (no INI quoting). A key of PinINI
	// without a default is sent only when the request sets it.
	Defaults []Setting

	// PinINI lists the ini keys whose values in PHP_VALUE and
	// PHP_ADMIN_VALUE get the pattern replaced. Keys are matched exactly,
	// as PHP does. If nil, DefaultPinINI is used; a non-nil empty slice
	// pins no ini key.
	PinINI []string

	// KeepHTTPProxy keeps the HTTP_PROXY param. By default it is dropped:
	// it is made from the client's "Proxy:" request header, and PHP code
	// that reads it as the proxy setting sends its outgoing requests
	// through an attacker's host (httpoxy, CVE-2016-5385).
	KeepHTTPProxy bool
}

// Setting is an ini key and its literal value.
type Setting struct{ Key, Value string }

// DefaultPinINI is the list of ini keys pinned when Config.PinINI is nil:
// the settings that name files PHP opens by path while it runs a request.
var DefaultPinINI = []string{"include_path", "open_basedir", "auto_prepend_file", "auto_append_file"}

// Errors returned by Rewrite, wrapped with the name of the offending param
// and ini key. A request that fails is unsafe to forward: the caller should
// answer it with an error rather than send it on unpinned.
var (
	// ErrDocroot means the from or to argument is not an absolute path,
	// or holds a NUL byte or a ".." component.
	ErrDocroot = errors.New("rewrite: invalid docroot")

	// ErrUnsafePath means DOCUMENT_ROOT or SCRIPT_FILENAME holds a NUL
	// byte or a ".." component, or PATH_TRANSLATED holds a NUL byte.
	// php-fpm reads params as C strings, so a NUL would cut the path PHP
	// sees short of the one checked here.
	ErrUnsafePath = errors.New("rewrite: unsafe path")

	// ErrINIValue means a PHP_VALUE or PHP_ADMIN_VALUE holds a NUL byte
	// or a quoted string that is never closed, or a pinned ini value could
	// not be read as a literal or written back as valid INI (see the
	// package documentation).
	ErrINIValue = errors.New("rewrite: ini value cannot be pinned")

	// ErrPattern means Config.SearchReplacePattern is an ancestor of the
	// unresolved docroot but the resolved docroot does not end in the same
	// path below it (/srv/current/public resolved to /srv/shared/www), so
	// the pattern's own release directory cannot be told from this pin.
	ErrPattern = errors.New("rewrite: search pattern cannot be pinned")

	// ErrTooLarge means a value Rewrite would create does not fit one
	// FastCGI record, as php-fpm needs each pair to: pinning made it grow
	// (a long resolved docroot replacing a short pattern many times). The
	// error also wraps fcgi.ErrParamTooLarge. Nothing is cut short: a
	// truncated include_path would silently load another release's files.
	ErrTooLarge = errors.New("rewrite: pinned param too large")
)

// patternRoot returns what a path pattern (cleaned, without trailing
// slashes) stands for in this pin. A pattern that is the unresolved docroot
// fromRoot, or any other path that is not above it, is replaced by the
// resolved docroot toRoot, as incpath did. A pattern above the docroot is
// replaced by its own resolution: the common layout roots the web server at
// /srv/site/current/public and names /srv/site/current/vendor in
// include_path, and with a pattern of /srv/site/current a docroot resolved
// to /srv/site/releases/A/public pins the pattern to /srv/site/releases/A,
// not to the docroot. That takes the resolved docroot to end in the same
// path below the pattern (/public); ok is false when it does not.
func patternRoot(pat, fromRoot, toRoot string) (string, bool) {
	if pat == "" || len(pat) >= len(fromRoot) || !hasRoot(fromRoot, pat) {
		return toRoot, true
	}
	rel := fromRoot[len(pat):] // starts with '/'
	if !strings.HasSuffix(toRoot, rel) {
		return "", false
	}
	return toRoot[:len(toRoot)-len(rel)], true
}

// Kinds of params Rewrite treats specially.
const (
	kindOther uint8 = iota
	kindDocRoot
	kindScript
	kindPathTranslated
	kindValue
	kindAdminValue
	kindHTTPProxy
	numKinds
)

func kindOf(name string) uint8 {
	switch name {
	case "DOCUMENT_ROOT":
		return kindDocRoot
	case "SCRIPT_FILENAME":
		return kindScript
	case "PATH_TRANSLATED":
		return kindPathTranslated
	case "PHP_VALUE":
		return kindValue
	case "PHP_ADMIN_VALUE":
		return kindAdminValue
	case "HTTP_PROXY":
		return kindHTTPProxy
	}
	return kindOther
}

// Requests with up to smallParams or stackParams params and configs with up to stackPins
// pinned keys are handled with arrays on the stack; larger ones allocate.
// An INI param with more than stackVerbatim verbatim entries is split twice.
const (
	smallParams   = 64 // both powers of two: the dedup table is twice as long
	stackParams   = 128
	stackPins     = 8
	fewPins       = 4 // as many as DefaultPinINI has
	stackVerbatim = 8 // verbatim INI entries remembered per param
)

var zeroConfig Config

// Rewrite appends to dst the params of in, pinned from the unresolved
// docroot from to the resolved docroot to, and returns the extended slice.
// On error dst is returned unchanged and nothing is written.
//
// Rewrite writes to in only through dst: dst may be in[:0] to rewrite in
// place, as every param is read before its slot is written. Any other
// overlap of dst's spare capacity with in is not allowed. The values
// Rewrite creates share one allocation; the others are the strings of in.
//
// Each name is sent once, at the position of its first occurrence in in:
// for ordinary params with the value of the last occurrence, as php-fpm
// would have used; for PHP_VALUE and PHP_ADMIN_VALUE with the entries of all
// occurrences merged. A PHP_VALUE created for Config.IncludePath is
// appended last.
//
// A nil *Config behaves as the zero Config.
func (c *Config) Rewrite(dst, in []fcgi.Pair, from, to string) ([]fcgi.Pair, error) {
	dst, _, err := c.RewriteBuffer(dst, in, from, to, nil)
	return dst, err
}

// RewriteBuffer is Rewrite writing the values it creates into buf, from
// its start, or into a new array when buf is too small, and returning the
// buffer it used for the next call: reusing it from one request to the next
// makes pinning a request allocation-free. The values point into the
// returned buffer without a copy, so it must not be written to while they are
// in use. On error buf is returned unchanged.
func (c *Config) RewriteBuffer(dst, in []fcgi.Pair, from, to string, buf []byte) ([]fcgi.Pair, []byte, error) {
	if c == nil {
		c = &zeroConfig
	}
	n := len(c.keys()) + 1
	if n <= stackPins+1 {
		var defaults [stackPins + 1]keyDefault
		c.defaultsOf(defaults[:n])
		return rewriteBuffer(c, defaults[:n], nil, dst, in, from, to, buf)
	}
	defaults := make([]keyDefault, n)
	c.defaultsOf(defaults)
	return rewriteBuffer(c, defaults, nil, dst, in, from, to, buf)
}

// rewriteBuffer is RewriteBuffer with the defaults of c (see defaultsOf)
// and, if prepared, its alone.
func rewriteBuffer(c *Config, defaults []keyDefault, alone *alone, dst, in []fcgi.Pair, from, to string, buf []byte) ([]fcgi.Pair, []byte, error) {
	b := buffer{b: buf[:0]}
	dst, err := rewrite(c, defaults, alone, dst, in, from, to, &b)
	if err != nil {
		return dst, buf, err
	}
	return dst, b.b, nil
}

// rewrite runs the passes of a plan (see plan). It owns the arrays the
// passes index, on its stack for requests up to stackParams params and
// configs up to stackPins pinned keys; arrays declared in a branch are only
// zeroed when it runs, so small requests do not pay for clearing the
// larger ones.
func rewrite(c *Config, defaults []keyDefault, alone *alone, dst, in []fcgi.Pair, from, to string, b *buffer) ([]fcgi.Pair, error) {
	var p plan
	if err := p.start(c, in, from, to); err != nil {
		return dst, err
	}
	n := len(in)
	var (
		kinds []uint8
		win   []int32  // the duplicate table's answer: see classify
		tab   []uint32 // the duplicate table: a power of two, at least 2n
	)
	switch {
	case n <= smallParams:
		var kindBuf [smallParams]uint8
		var winBuf [smallParams]int32
		var tabBuf [2 * smallParams]uint32
		kinds, win, tab = kindBuf[:n], winBuf[:n], tabBuf[:]
	case n <= stackParams:
		var kindBuf [stackParams]uint8
		var winBuf [stackParams]int32
		var tabBuf [2 * stackParams]uint32
		kinds, win, tab = kindBuf[:n], winBuf[:n], tabBuf[:]
	default:
		size := 2 * stackParams
		for size < 2*n {
			size <<= 1
		}
		kinds, win, tab = make([]uint8, n), make([]int32, n), make([]uint32, size)
	}
	if err := p.classify(kinds, win, tab); err != nil {
		return dst, err
	}

	var valuePins, adminPins []pinSlot
	var valueVerb, adminVerb []string
	if p.nValue == 0 && p.nAdmin == 0 && alone.usable(defaults, &p.rep) {
		p.value.prebuilt(alone.value)
	} else {
		if p.needsINI() {
			var pins []pinSlot
			switch {
			case len(p.keys) <= fewPins:
				// The usual keys: half the slots to clear.
				var pinBuf [2 * fewPins]pinSlot
				pins = pinBuf[:2*len(p.keys)]
			case len(p.keys) <= stackPins:
				var pinBuf [2 * stackPins]pinSlot
				pins = pinBuf[:2*len(p.keys)]
			default:
				pins = make([]pinSlot, 2*len(p.keys))
			}
			valuePins, adminPins = pins[:len(p.keys)], pins[len(p.keys):]
			var verbBuf [2 * stackVerbatim]string
			valueVerb, adminVerb = verbBuf[:stackVerbatim], verbBuf[stackVerbatim:]
		}
		if err := p.readINI(defaults, kinds, valuePins, adminPins, valueVerb, adminVerb); err != nil {
			return dst, err
		}
	}
	p.sizePaths(win)
	if err := p.checkSizes(); err != nil {
		return dst, err
	}
	if err := p.write(b, kinds, valuePins, adminPins, valueVerb, adminVerb); err != nil {
		return dst, err
	}
	return p.send(dst, kinds, win), nil
}

// buffer is where Rewrite writes the values it creates, in place of a
// strings.Builder: its array may be the caller's, reused.
type buffer struct{ b []byte }

func (b *buffer) WriteString(s string) { b.b = append(b.b, s...) }
func (b *buffer) writeByte(c byte)     { b.b = append(b.b, c) }
func (b *buffer) Len() int             { return len(b.b) }

// String returns what was written so far without a copy: it changes if the
// array is written to again.
func (b *buffer) String() string { return unsafe.String(unsafe.SliceData(b.b), len(b.b)) }

// pairSize is fcgi.PairSize for a name and a value of these lengths: each
// length takes one byte below 128, four from there.
func pairSize(name, value int) int {
	size := name + value + 2
	if name >= 128 {
		size += 3
	}
	if value >= 128 {
		size += 3
	}
	return size
}

// replacer replaces the pattern by the resolved docroot in ini values.
type replacer struct {
	pat, to  string
	boundary bool // pat is a path: match only whole paths of a list

	// Values read from the request pass validValue. Replacing a path
	// pattern by a valid docroot keeps them valid: the seams fall next to
	// '/', ':' or the ends, where no "${" can form. Otherwise each pinned
	// value is checked after the replacement. Decided on first use.
	safe, safeKnown bool
}

// needsCheck reports whether pinned values must be checked with validValue
// after the replacement.
func (r *replacer) needsCheck() bool {
	if !r.safeKnown {
		r.safe = r.boundary && validValue(r.to)
		r.safeKnown = true
	}
	return !r.safe
}

// count returns how many times s holds the pattern.
func (r *replacer) count(s string) int {
	if r.pat == "" {
		return 0
	}
	n := 0
	for i := nextMatch(s, r.pat, 0, r.boundary); i >= 0; i = nextMatch(s, r.pat, i+len(r.pat), r.boundary) {
		n++
	}
	return n
}

// write writes s with every occurrence of the pattern replaced.
func (r *replacer) write(b *buffer, s string) {
	if r.pat == "" {
		b.WriteString(s)
		return
	}
	done := 0
	for i := nextMatch(s, r.pat, 0, r.boundary); i >= 0; i = nextMatch(s, r.pat, i+len(r.pat), r.boundary) {
		b.WriteString(s[done:i])
		b.WriteString(r.to)
		done = i + len(r.pat)
	}
	b.WriteString(s[done:])
}

// pathPlan rewrites SCRIPT_FILENAME or PATH_TRANSLATED.
type pathPlan struct {
	skip       int    // bytes before the path, kept as they are (see proxyPrefixLen)
	in         string // the value sent before pinning
	changed    bool
	outLen     int
	start, end int // of the new value in the shared buffer
	out        string
}

// size decides whether v lies under the docroot and how long it becomes.
func (p *pathPlan) size(v, fromRoot, toRoot string) {
	if !hasRoot(v[p.skip:], fromRoot) {
		return
	}
	p.in, p.changed = v, true
	p.outLen = len(toRoot) + len(v) - len(fromRoot)
}

func (p *pathPlan) write(b *buffer, fromRoot, toRoot string) {
	if !p.changed {
		return
	}
	p.start = b.Len()
	b.WriteString(p.in[:p.skip])
	b.WriteString(toRoot)
	b.WriteString(p.in[p.skip+len(fromRoot):])
	p.end = b.Len()
}

func (p *pathPlan) result(v string) string {
	switch {
	case !p.changed:
		return v
	case p.out == "":
		// The script was the docroot itself, pinned to "/".
		return "/"
	}
	return p.out
}

// pinSlot holds the last entry of one pinned key in an INI param.
type pinSlot struct {
	raw     string // text after '=' in the request
	value   string // raw read as a literal
	set     bool
	literal bool   // value is a Config default, not read from raw
	entry   string // the default's entry, when usable (see keyDefault)
}

// iniPlan rewrites PHP_VALUE or PHP_ADMIN_VALUE.
type iniPlan struct {
	name      string
	kind      uint8
	n         int    // occurrences in the request
	base      string // Config.IncludePath, added when hasBase
	baseEntry string // its entry, when usable (see keyDefault)
	hasBase   bool

	hasInclude bool           // the request sets include_path
	last       map[string]int // with several occurrences: see lastSets
	nPinned    int            // pins set
	verbN      int            // entries sent verbatim
	verbLen    int            // their length

	rebuild    bool
	isBuilt    bool // out was made in advance (see prebuilt)
	outLen     int
	start, end int
	out        string
}

// scan reads every occurrence of the param, from the first one at index
// first, and records in pins the last entry of each pinned key, and in
// verb the verbatim entries as far as it has room.
//
// A quoted string that is never closed is refused. php-fpm would stop
// parsing there anyway, and once occurrences are merged it would swallow
// the lines that follow it, lines php-fpm would otherwise have applied.
//
// Of several occurrences, an entry whose key a later occurrence sets again
// is dropped (see write for why).
func (p *iniPlan) scan(in []fcgi.Pair, kinds []uint8, first int, keys []string, pins []pinSlot, verb []string) error {
	if p.n > 1 {
		p.last = lastSets(in, kinds, p.kind)
	}
	for i := first; i < len(in); i++ {
		if kinds[i] != p.kind {
			continue
		}
		v := in[i].Value
		for j := 0; ; {
			e, next, eq, open, bad := scanEntry(v, j)
			if e == "" {
				break
			}
			if open {
				return fmt.Errorf("%w: unterminated quoted string in %s", ErrINIValue, p.name)
			}
			if bad {
				return fmt.Errorf("%w: quoted section name in %s", ErrINIValue, p.name)
			}
			j = next
			key, raw, ok := splitAt(e, eq)
			if ok {
				if key == "include_path" {
					p.hasInclude = true
				}
				if k := slices.Index(keys, key); k >= 0 {
					if !pins[k].set {
						p.nPinned++
					}
					pins[k].raw, pins[k].set = raw, true
					continue
				}
			}
			if p.n > 1 && ok && p.setLater(i, key) {
				continue
			}
			if p.verbN < len(verb) {
				verb[p.verbN] = e
			}
			p.verbN++
			p.verbLen += len(e)
		}
	}
	return nil
}

// lastSets maps each key set in the occurrences of the INI param kind to
// the index of the last occurrence that sets it. It is made only for
// requests with several occurrences, which are rare, and makes the question
// "does a later one set it?" one lookup: asked per entry against every
// later entry, a request of many short entries would cost quadratic time.
func lastSets(in []fcgi.Pair, kinds []uint8, kind uint8) map[string]int {
	last := map[string]int{}
	for i := range in {
		if kinds[i] != kind {
			continue
		}
		for e := range entries(in[i].Value) {
			if k, _, ok := splitEntry(e); ok {
				last[k] = i
			}
		}
	}
	return last
}

// setLater reports whether an occurrence after index i sets key, by
// p.last. extension and zend_extension are never set again: each entry
// loads one more.
func (p *iniPlan) setLater(i int, key string) bool {
	if key == "extension" || key == "zend_extension" {
		return false
	}
	return p.last[key] > i
}

// addDefaults fills the pins of keys the request sets in neither param
// with their Config default, if they have one. The configured include_path
// base, when it is added, stands for include_path's.
func (p *iniPlan) addDefaults(keys []string, pins, other []pinSlot, defaults []keyDefault, r *replacer) {
	for k := range defaults {
		d := &defaults[k]
		if !d.set || pins[k].set || other[k].set || p.hasBase && keys[k] == "include_path" {
			continue
		}
		pins[k] = pinSlot{value: d.value, set: true, literal: true}
		if d.usable(r) {
			pins[k].entry = d.entry
		}
		p.nPinned++
	}
}

// size reads the pinned values and computes the length of the new value.
// A param seen once with nothing to pin is sent as it came.
func (p *iniPlan) size(keys []string, pins []pinSlot, r *replacer) error {
	p.rebuild = p.n > 1 || p.nPinned > 0 || p.hasBase
	if !p.rebuild {
		return nil
	}
	delta := len(r.to) - len(r.pat)
	entries := p.verbN
	l := p.verbLen
	if p.hasBase {
		entries++
		if p.baseEntry != "" {
			l += len(p.baseEntry)
		} else {
			l += len(`include_path=""`) + len(p.base) + r.count(p.base)*delta
		}
	}
	for k := range pins {
		s := &pins[k]
		if !s.set {
			continue
		}
		if s.entry != "" {
			entries++
			l += len(s.entry)
			continue
		}
		v := s.value
		if !s.literal {
			var ok bool
			if v, ok = parseValue(s.raw); !ok {
				return fmt.Errorf("%w: %s in %s", ErrINIValue, keys[k], p.name)
			}
			s.value = v
		}
		entries++
		l += len(keys[k]) + len(`=""`) + len(v) + r.count(v)*delta
	}
	if entries > 1 {
		l += entries - 1
	}
	p.outLen = l
	return nil
}

// write writes the new value: pinned entries first, then the verbatim
// entries of every occurrence, one per line. Pinned entries come first
// because php-fpm stops at the first syntax error in the text and keeps
// what it applied before: a broken line sent by the web server must not
// cost the request its pin.
//
// Of several occurrences, the last one's entries come first, then the
// earlier ones', each without the keys a later one sets. php-fpm alone
// applies only the last occurrence, up to its first broken line; merged
// in this order, a broken line in an earlier occurrence can only cut off
// entries php-fpm would never have applied, and every key still gets the
// value of its last occurrence.
func (p *iniPlan) write(b *buffer, in []fcgi.Pair, kinds []uint8, keys []string, pins []pinSlot, verb []string, r *replacer) error {
	if !p.rebuild || p.isBuilt {
		return nil
	}
	p.start = b.Len()
	w := lineWriter{b: b}
	if p.hasBase {
		if p.baseEntry != "" {
			w.entry(p.baseEntry)
		} else if !w.pin("include_path", p.base, r, true) {
			return fmt.Errorf("%w: include_path from the configured base in %s", ErrINIValue, p.name)
		}
	}
	for k := range pins {
		s := &pins[k]
		switch {
		case !s.set:
		case s.entry != "":
			w.entry(s.entry)
		case !w.pin(keys[k], s.value, r, s.literal || r.needsCheck()):
			return fmt.Errorf("%w: %s in %s after pinning", ErrINIValue, keys[k], p.name)
		}
	}
	if p.n == 1 && p.verbN <= len(verb) {
		for _, e := range verb[:p.verbN] {
			w.entry(e)
		}
		p.end = b.Len()
		return nil
	}
	// Several occurrences, or more verbatim entries than scan kept: split
	// the values again, the last occurrence first.
	for i := len(in) - 1; i >= 0; i-- {
		if kinds[i] != p.kind {
			continue
		}
		for e := range entries(in[i].Value) {
			if key, _, ok := splitEntry(e); ok && (slices.Contains(keys, key) || p.n > 1 && p.setLater(i, key)) {
				continue
			}
			w.line()
			b.WriteString(e)
		}
	}
	p.end = b.Len()
	return nil
}

func (p *iniPlan) slice(s string) {
	if p.rebuild && !p.isBuilt {
		p.out = s[p.start:p.end]
	}
}

// prebuilt makes the param v, made in advance, for a request that sets
// neither INI param (see alone): nothing to read, size or write.
func (p *iniPlan) prebuilt(v string) {
	p.rebuild, p.isBuilt, p.out, p.outLen = true, true, v, len(v)
}

// result returns the value to send in place of v, the value of the
// param's last occurrence. When the param was not rebuilt it occurs once,
// so v is the request's value.
func (p *iniPlan) result(v string) string {
	if p.rebuild {
		return p.out
	}
	return v
}

// lineWriter writes INI entries one per line.
type lineWriter struct {
	b   *buffer
	sep bool
}

func (w *lineWriter) line() {
	if w.sep {
		w.b.writeByte('\n')
	}
	w.sep = true
}

// entry writes e as it is.
func (w *lineWriter) entry(e string) {
	w.line()
	w.b.WriteString(e)
}

// pin writes key="v" with the pattern replaced in v. With check set it
// reports whether the result passes validValue; the check is needed where
// the resolved docroot, or the seam where it meets the rest of v, may hold
// what v alone did not, and for values not read by parseValue.
func (w *lineWriter) pin(key, v string, r *replacer, check bool) bool {
	w.line()
	w.b.WriteString(key)
	w.b.WriteString(`="`)
	start := w.b.Len()
	r.write(w.b, v)
	ok := !check || validValue(w.b.String()[start:])
	w.b.writeByte('"')
	return ok
}
