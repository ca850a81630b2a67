package rewrite

import (
	"fmt"
	"slices"
	"strings"

	"github.com/incpathd/incpathd/fcgi"
)

// plan is one request's rewrite: what each pass learns about the request
// for the passes after it. rewrite runs the passes in order, one method
// each:
//
//  1. start: the docroots and the pattern, from the Config;
//  2. classify: the kind of every param, unsafe paths refused, duplicate
//     names found (dedup.go), the params of other kinds than kindOther
//     recorded: the one pass over every param;
//  3. readINI and sizePaths: the INI params read, every value Rewrite
//     creates sized, none too large for a record (checkSizes);
//  4. write: every new value written into one buffer;
//  5. send: each name sent once, into dst.
//
// The arrays the passes index (kinds, win, the dedup table, the pin slots
// and verbatim entries) are not fields but arguments. They live on
// rewrite's stack, and escape analysis follows a struct as a whole: plan's
// output strings go to dst, so a plan holding slices of those arrays would
// move them to the heap, an allocation per request.
type plan struct {
	c                  *Config
	in                 []fcgi.Pair
	from, to           string // as given, for messages
	fromRoot, toRoot   string // cleaned by cleanRoot
	docroot            string // the DOCUMENT_ROOT sent
	keys               []string
	rep                replacer
	first              [numKinds]int // first param of each kind, -1 if none
	nValue, nAdmin     int
	value, admin       iniPlan
	script, translated pathPlan
	total              int // bytes of the values created

	// The params classify found not of kindOther, in order, when there
	// are no more than maxSpecial: with no duplicate names (dups false),
	// send copies the params between them as they are.
	specials [maxSpecial]int32
	nSpecial int
	dups     bool // some name occurs more than once
	win      bool // classify filled win
}

// maxSpecial is how many params not of kindOther plan remembers: a request
// has DOCUMENT_ROOT, SCRIPT_FILENAME, PATH_TRANSLATED, PHP_VALUE and
// perhaps PHP_ADMIN_VALUE and HTTP_PROXY.
const maxSpecial = 8

// start checks the docroots and decides what the search-replace pattern
// is replaced by.
func (p *plan) start(c *Config, in []fcgi.Pair, from, to string) error {
	p.c, p.in, p.from, p.to = c, in, from, to
	var ok bool
	if p.fromRoot, ok = cleanRoot(from); !ok {
		return fmt.Errorf("%w: the unresolved docroot", ErrDocroot)
	}
	if p.toRoot, ok = cleanRoot(to); !ok {
		return fmt.Errorf("%w: the resolved docroot", ErrDocroot)
	}
	p.docroot = p.toRoot
	if p.docroot == "" {
		p.docroot = "/"
	}
	p.keys = c.keys()
	p.rep = replacer{pat: c.SearchReplacePattern, to: p.toRoot}
	if p.rep.pat == "" {
		p.rep.pat = p.fromRoot
	}
	if p.rep.pat != "" && p.rep.pat[0] == '/' {
		p.rep.pat = trimSlashes(p.rep.pat)
		p.rep.boundary = true
		if p.rep.to, ok = patternRoot(p.rep.pat, p.fromRoot, p.toRoot); !ok {
			return fmt.Errorf("%w: %s is above the docroot %s, which resolved to %s, not below a directory of its own",
				ErrPattern, p.rep.pat, from, to)
		}
	}
	// Field by field: p is zero, and writing whole iniPlans would clear
	// them a second time.
	p.value.name, p.value.kind = "PHP_VALUE", kindValue
	p.admin.name, p.admin.kind = "PHP_ADMIN_VALUE", kindAdminValue
	return nil
}

// classify fills kinds with the kind of each param, refuses unsafe paths,
// and counts the INI params. It is the one pass over every param: the
// passes after it visit only the params note recorded, unless names
// repeat. Only then does it fill win (see dedup); without repeats every
// param is its own last occurrence.
//
// The loop makes no call for an ordinary param whose name is new, the
// usual case: Go keeps no register across a call, and a call per param
// would spill the loop's state to the stack each time.
func (p *plan) classify(kinds []uint8, win []int32, tab []uint32) error {
	for k := range p.first {
		p.first[k] = -1
	}
	in := p.in
	t := newTable(tab, len(in))
	kinds = kinds[:len(in)]
	repeats := false // or the fast hash gave up: dedup decides
	for i := range in {
		name := in[i].Name
		k := kindOf(name)
		kinds[i] = k
		if k != kindOther {
			if err := p.note(i, k); err != nil {
				return err
			}
		}
		if repeats {
			continue
		}
		// fastHash and the table's first probe, inlined: an empty slot.
		var h uint64
		if len(name) >= 8 {
			h = mix(load64(name, 0), load64(name, len(name)-8), len(name))
		} else {
			h = fastHash(name)
		}
		if slot := h >> t.shift; slot < uint64(len(t.tab)) && t.tab[slot] == 0 {
			t.tab[slot] = h32(h, t.idx) | uint32(i+1)
			continue
		}
		repeats = t.insert(in, i, h, maxProbe) != i
	}
	if repeats {
		clear(tab)
		p.dups = dedup(in, win[:len(in)], tab)
		p.win = true
	}
	p.value.n, p.admin.n = p.nValue, p.nAdmin
	return nil
}

// last returns the index of the last param with the name of param i, the
// first with it: by win, if classify filled it, else i itself.
func (p *plan) last(win []int32, i int) int {
	if p.win {
		return int(win[i])
	}
	return i
}

// note records param i, of a kind other than kindOther: it checks it,
// counts it, and remembers it for send.
func (p *plan) note(i int, k uint8) error {
	if err := p.check(i, k); err != nil {
		return err
	}
	switch k {
	case kindValue:
		p.nValue++
	case kindAdminValue:
		p.nAdmin++
	}
	if p.first[k] < 0 {
		p.first[k] = i
	}
	if p.nSpecial < len(p.specials) {
		p.specials[p.nSpecial] = int32(i)
	}
	p.nSpecial++
	return nil
}

// check refuses param i, of kind k, if its value is unsafe: a NUL byte or a
// ".." component in DOCUMENT_ROOT or SCRIPT_FILENAME, a NUL byte in
// PATH_TRANSLATED, PHP_VALUE or PHP_ADMIN_VALUE.
func (p *plan) check(i int, k uint8) error {
	name, v := p.in[i].Name, p.in[i].Value
	switch k {
	case kindDocRoot:
		// start checked the unresolved docroot, which the caller
		// usually took from this very param.
		if v == p.from {
			return nil
		}
		return CheckPath(name, v)
	case kindScript:
		return CheckPath(name, v)
	case kindPathTranslated:
		// Not checked for "..": it is DOCUMENT_ROOT plus the
		// client's PATH_INFO, which PHP reports but never opens.
		if strings.IndexByte(v, 0) >= 0 {
			return fmt.Errorf("%w: NUL byte in %s", ErrUnsafePath, name)
		}
	case kindValue, kindAdminValue:
		if strings.IndexByte(v, 0) >= 0 {
			return fmt.Errorf("%w: NUL byte in %s", ErrINIValue, name)
		}
	}
	return nil
}

// needsINI reports whether readINI has anything to do, and so needs pin
// slots.
func (p *plan) needsINI() bool {
	return p.nValue > 0 || p.nAdmin > 0 || p.c.IncludePath != "" || len(p.c.Defaults) > 0
}

// readINI reads the INI params into their pin slots and verbatim entries,
// adds the Config's include_path and defaults, and sizes the INI values.
func (p *plan) readINI(defaults []keyDefault, kinds []uint8, valuePins, adminPins []pinSlot, valueVerb, adminVerb []string) error {
	if p.nValue > 0 {
		if err := p.value.scan(p.in, kinds, p.first[kindValue], p.keys, valuePins, valueVerb); err != nil {
			return err
		}
	}
	if p.nAdmin > 0 {
		if err := p.admin.scan(p.in, kinds, p.first[kindAdminValue], p.keys, adminPins, adminVerb); err != nil {
			return err
		}
	}
	if p.c.IncludePath != "" && !p.value.hasInclude && !p.admin.hasInclude {
		p.value.base, p.value.hasBase = p.c.IncludePath, true
		if d := &defaults[len(p.keys)]; d.usable(&p.rep) {
			p.value.baseEntry = d.entry
		}
	}
	if len(p.c.Defaults) > 0 {
		p.value.addDefaults(p.keys, valuePins, adminPins, defaults[:len(p.keys)], &p.rep)
	}
	if err := p.value.size(p.keys, valuePins, &p.rep); err != nil {
		return err
	}
	if err := p.admin.size(p.keys, adminPins, &p.rep); err != nil {
		return err
	}
	p.total += p.value.outLen + p.admin.outLen
	return nil
}

// sizePaths sizes SCRIPT_FILENAME and PATH_TRANSLATED pinned; win is
// classify's.
func (p *plan) sizePaths(win []int32) {
	if p.fromRoot != p.toRoot {
		if f := p.first[kindScript]; f >= 0 {
			v := p.in[p.last(win, f)].Value
			p.script.skip = proxyPrefixLen(v)
			p.script.size(v, p.fromRoot, p.toRoot)
		}
		if f := p.first[kindPathTranslated]; f >= 0 {
			p.translated.size(p.in[p.last(win, f)].Value, p.fromRoot, p.toRoot)
		}
	}
	p.total += p.script.outLen + p.translated.outLen
}

// checkSizes refuses a created value that would not fit in a record.
func (p *plan) checkSizes() error {
	for _, v := range [...]struct {
		name    string
		created bool
		n       int
	}{
		{"SCRIPT_FILENAME", p.script.changed, p.script.outLen},
		{"PATH_TRANSLATED", p.translated.changed, p.translated.outLen},
		{"PHP_VALUE", p.value.rebuild, p.value.outLen},
		{"PHP_ADMIN_VALUE", p.admin.rebuild, p.admin.outLen},
	} {
		if v.created && pairSize(len(v.name), v.n) > fcgi.MaxContent {
			return fmt.Errorf("%w: %s would be %d bytes: %w", ErrTooLarge, v.name, v.n, fcgi.ErrParamTooLarge)
		}
	}
	return nil
}

// write writes every new value into b and points the plans at them.
func (p *plan) write(b *buffer, kinds []uint8, valuePins, adminPins []pinSlot, valueVerb, adminVerb []string) error {
	if p.total == 0 {
		return nil
	}
	// Sized exactly: nothing written below moves the array, so the
	// strings taken from it stay good.
	if cap(b.b) < p.total {
		b.b = make([]byte, 0, p.total)
	}
	p.script.write(b, p.fromRoot, p.toRoot)
	p.translated.write(b, p.fromRoot, p.toRoot)
	if err := p.value.write(b, p.in, kinds, p.keys, valuePins, valueVerb, &p.rep); err != nil {
		return err
	}
	if err := p.admin.write(b, p.in, kinds, p.keys, adminPins, adminVerb, &p.rep); err != nil {
		return err
	}
	s := b.String()
	p.script.out = s[p.script.start:p.script.end]
	p.translated.out = s[p.translated.start:p.translated.end]
	p.value.slice(s)
	p.admin.slice(s)
	return nil
}

// send appends each name once to dst. Runs of params sent as they came are
// copied in bulk, which is cheaper than one append per param.
func (p *plan) send(dst []fcgi.Pair, kinds []uint8, win []int32) []fcgi.Pair {
	dst = slices.Grow(dst, len(p.in)+1)
	switch {
	case !p.dups && p.nSpecial <= len(p.specials):
		dst = p.sendUnique(dst, kinds)
	case !p.win:
		// Many params of other kinds, no repeats.
		for i := range p.in {
			win[i] = int32(i)
		}
		fallthrough
	default:
		dst = p.sendAll(dst, kinds, win)
	}
	if p.nValue == 0 && p.value.rebuild {
		dst = append(dst, fcgi.Pair{Name: "PHP_VALUE", Value: p.value.out})
	}
	return dst
}

// sendAll is send for any request: it looks at every param.
func (p *plan) sendAll(dst []fcgi.Pair, kinds []uint8, win []int32) []fcgi.Pair {
	in := p.in
	run := 0
	for i := range in {
		k, last := kinds[i], win[i]
		if k == kindOther && last == int32(i) {
			continue
		}
		dst = append(dst, in[run:i]...)
		run = i + 1
		if last < 0 {
			continue
		}
		if v, ok := p.result(k, in[last].Value); ok {
			dst = append(dst, fcgi.Pair{Name: in[i].Name, Value: v})
		}
	}
	return append(dst, in[run:]...)
}

// sendUnique is send for a request without duplicate names whose params
// not of kindOther classify recorded: only those change, each is its own
// last occurrence, and the params between them are copied as they are.
func (p *plan) sendUnique(dst []fcgi.Pair, kinds []uint8) []fcgi.Pair {
	in := p.in
	run := 0
	for _, i := range p.specials[:p.nSpecial] {
		dst = append(dst, in[run:i]...)
		run = int(i) + 1
		if v, ok := p.result(kinds[i], in[i].Value); ok {
			dst = append(dst, fcgi.Pair{Name: in[i].Name, Value: v})
		}
	}
	return append(dst, in[run:]...)
}

// result is the value sent for a param of kind k whose last occurrence
// has value v; ok is false for a param that is dropped.
func (p *plan) result(k uint8, v string) (string, bool) {
	switch k {
	case kindDocRoot:
		return p.docroot, true
	case kindScript:
		return p.script.result(v), true
	case kindPathTranslated:
		return p.translated.result(v), true
	case kindValue:
		return p.value.result(v), true
	case kindAdminValue:
		return p.admin.result(v), true
	case kindHTTPProxy:
		return v, p.c.KeepHTTPProxy
	}
	return v, true
}
