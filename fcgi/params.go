package fcgi

import (
	"errors"
	"fmt"
	"unsafe"
)

// Pair is one FastCGI name-value pair, as carried in a PARAMS stream.
// Requests keep their pairs in the order the web server sent them.
type Pair struct {
	Name  string
	Value string
}

var (
	// ErrBadParams is returned for a PARAMS stream that does not decode.
	ErrBadParams = errors.New("fcgi: malformed name-value pair")
	// ErrParamTooLarge is returned for a pair that does not fit one record:
	// php-fpm parses each PARAMS record on its own, so a pair cannot span two.
	ErrParamTooLarge = errors.New("fcgi: name-value pair larger than one record")
)

// Param returns the value of the last pair called name, "" if there is
// none: php-fpm's rule for duplicates, where the last one wins whole.
func Param(params []Pair, name string) string {
	for i := len(params) - 1; i >= 0; i-- {
		if params[i].Name == name {
			return params[i].Value
		}
	}
	return ""
}

// DecodeParams decodes a whole PARAMS stream and appends its pairs to dst.
// The names and values share one string made from b, so decoding a request
// costs one allocation however many pairs it has.
func DecodeParams(dst []Pair, b []byte) ([]Pair, error) {
	return decodeParams(dst, string(b), -1)
}

// DecodeParamsInPlace is DecodeParams without the copy: the names and
// values point into b, so b must not change while they are in use. It costs
// no allocation when dst has room. The Server decodes each request's params
// so, from a buffer it reuses only once the handler has returned.
func DecodeParamsInPlace(dst []Pair, b []byte) ([]Pair, error) {
	return decodeParams(dst, inPlace(b), -1)
}

// inPlace returns b as a string without copying it.
func inPlace(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// decodeParams decodes the stream b, refusing a stream of more than max
// pairs (none if max is negative) before it appends them, so a stream of
// tiny pairs cannot grow dst without bound.
func decodeParams(dst []Pair, b string, max int) ([]Pair, error) {
	s := b
	for count := 0; len(s) > 0; count++ {
		// Most pairs go through decodeShort; this loop takes the rest
		// one at a time, and grows dst.
		n := len(dst)
		if dst, s = decodeShort(dst, s, max-count); len(s) == 0 {
			break
		}
		if count += len(dst) - n; count == max {
			return dst, fmt.Errorf("%w: more than %d params", ErrParamsTooLarge, max)
		}
		var nl, vl uint32
		if len(s) >= 2 && s[0]|s[1] < 0x80 {
			nl, vl, s = uint32(s[0]), uint32(s[1]), s[2:]
		} else {
			var err error
			if nl, vl, s, err = pairLens(s, len(b)); err != nil {
				return dst, err
			}
		}
		if uint64(nl)+uint64(vl) > uint64(len(s)) {
			return dst, fmt.Errorf("%w: pair of %d+%d bytes with %d left", ErrBadParams, nl, vl, len(s))
		}
		dst = append(dst, Pair{Name: s[:nl], Value: s[nl : nl+vl]})
		s = s[nl+vl:]
	}
	return dst, nil
}

// decodeShort appends to dst, as far as its capacity goes and up to max
// pairs (no bound if max is negative), the pairs at the start of s whose
// lengths take one byte each and that s holds whole, and returns the rest
// of s. It makes no call, so that its loop keeps its state in registers.
func decodeShort(dst []Pair, s string, max int) ([]Pair, string) {
	for n := len(dst); n < cap(dst) && max != 0 && len(s) >= 2 && s[0]|s[1] < 0x80; n++ {
		nl, vl := int(s[0]), int(s[1])
		if 2+nl+vl > len(s) {
			break
		}
		dst = dst[:n+1]
		dst[n] = Pair{Name: s[2 : 2+nl], Value: s[2+nl : 2+nl+vl]}
		s = s[2+nl+vl:]
		max--
	}
	return dst, s
}

// pairLens decodes the two lengths at the start of s, a pair of the
// stream of total bytes, and returns them with the rest of s.
func pairLens(s string, total int) (nl, vl uint32, rest string, err error) {
	nl, n, ok := pairLen(s)
	if !ok {
		return 0, 0, s, fmt.Errorf("%w: bad length at byte %d", ErrBadParams, total-len(s))
	}
	s = s[n:]
	vl, n, ok = pairLen(s)
	if !ok {
		return 0, 0, s, fmt.Errorf("%w: bad length at byte %d", ErrBadParams, total-len(s))
	}
	return nl, vl, s[n:], nil
}

// pairLen decodes a 1- or 4-byte length and returns it with the bytes read.
func pairLen(s string) (l uint32, n int, ok bool) {
	if len(s) == 0 {
		return 0, 0, false
	}
	if s[0]>>7 == 0 {
		return uint32(s[0]), 1, true
	}
	if len(s) < 4 {
		return 0, 0, false
	}
	return uint32(s[0]&0x7f)<<24 | uint32(s[1])<<16 | uint32(s[2])<<8 | uint32(s[3]), 4, true
}

// PairSize is the encoded size of p.
func PairSize(p Pair) int {
	return lenSize(len(p.Name)) + lenSize(len(p.Value)) + len(p.Name) + len(p.Value)
}

func lenSize(n int) int {
	if n < 128 {
		return 1
	}
	return 4
}

// AppendPair appends the encoding of p to b.
func AppendPair(b []byte, p Pair) []byte {
	b = appendLen(b, len(p.Name))
	b = appendLen(b, len(p.Value))
	b = append(b, p.Name...)
	return append(b, p.Value...)
}

// appendRecord appends to b, within its capacity, pairs as one PARAMS
// record for request id followed by the empty one, and reports whether they
// fit: the buffer's room and one record's content. It sizes the record as
// it goes, one pass over the pairs instead of two; b's bytes past its
// length are only scratch until the caller writes them. A run of pairs that
// are still the bytes of raw (see rawSpan) is copied from it in one piece.
func appendRecord(b []byte, id uint16, pairs []Pair, raw string) ([]byte, bool) {
	start := len(b)
	if cap(b)-start < 2*HeaderLen {
		return b, false
	}
	b = appendHeader(b, TypeParams, id, 0) // its length is set below
	room := cap(b) - HeaderLen             // for the empty record
	for i := 0; i < len(pairs); i++ {
		p := pairs[i]
		if from, to, ok := rawSpan(raw, p); ok {
			var n int
			to, n = rawRun(raw, to, pairs[i+1:])
			i += n
			if len(b)+to-from > room {
				return b, false
			}
			b = append(b, raw[from:to]...)
			continue
		}
		nl, vl := len(p.Name), len(p.Value)
		if nl < 128 && vl < 128 {
			if len(b)+2+nl+vl > room {
				return b, false
			}
			b = append(b, byte(nl), byte(vl))
		} else {
			if len(b)+PairSize(p) > room {
				return b, false
			}
			b = appendLen(appendLen(b, nl), vl)
		}
		b = append(b, p.Name...)
		if vl > 0 { // a copy saved: CONTENT_TYPE, PATH_INFO and others are often empty
			b = append(b, p.Value...)
		}
	}
	n := len(b) - start - HeaderLen
	if n > MaxContent {
		return b, false
	}
	b[start+4], b[start+5] = byte(n>>8), byte(n)
	return appendHeader(b, TypeParams, id, 0), true
}

// rawSpan reports whether raw[from:to] is the encoding of p, found from
// where p's name points: the lengths of p's name and value encoded just
// before it, its name there, and its value, if any, right after its name.
// That is so for a pair decoded in place from raw and sent unchanged.
// Nothing about p is trusted: the bytes before the name are compared, and
// the name and the value are raw's only if they point into it where they
// should, so a span found is the encoding whatever p came from. Only
// pairs with a name are looked for: an empty string points anywhere.
func rawSpan(raw string, p Pair) (from, to int, ok bool) {
	nl, vl := len(p.Name), len(p.Value)
	if len(raw) == 0 || nl == 0 {
		return 0, 0, false
	}
	base := uintptr(unsafe.Pointer(unsafe.StringData(raw)))
	at := uintptr(unsafe.Pointer(unsafe.StringData(p.Name))) - base
	if at >= uintptr(len(raw)) {
		return 0, 0, false
	}
	name := int(at)
	from = name - lenSize(nl) - lenSize(vl)
	to = name + nl + vl
	if from < 0 || to > len(raw) {
		return 0, 0, false
	}
	if vl > 0 && uintptr(unsafe.Pointer(unsafe.StringData(p.Value)))-base != uintptr(name+nl) {
		return 0, 0, false
	}
	return from, to, lensAre(raw[from:name], nl, vl)
}

// rawRun extends a span of raw that ends at to over the pairs that follow
// it there, as rawSpan would find them, and returns the span's new end and
// how many pairs it took. One call per run and the lengths compared at a
// known place: short pairs only, the long ones start runs of their own.
func rawRun(raw string, to int, pairs []Pair) (end, n int) {
	base := uintptr(unsafe.Pointer(unsafe.StringData(raw)))
	for i := range pairs {
		p := &pairs[i]
		nl, vl := uint(len(p.Name)), uint(len(p.Value))
		name := uintptr(unsafe.Pointer(unsafe.StringData(p.Name)))
		next := uint(to) + 2 + nl + vl
		// nl-1 >= 127 is nl == 0 or nl >= 128, in one comparison.
		if name != base+uintptr(to)+2 || nl-1 >= 127 || vl >= 128 || next > uint(len(raw)) ||
			vl > 0 && uintptr(unsafe.Pointer(unsafe.StringData(p.Value))) != name+uintptr(nl) {
			break
		}
		if b := raw[to : to+2]; b[0] != byte(nl) || b[1] != byte(vl) {
			break
		}
		to = int(next)
		n++
	}
	return to, n
}

// lensAre reports whether b is the encoding of the lengths nl and vl, as
// appendLen writes them.
func lensAre(b string, nl, vl int) bool {
	if len(b) == 2 {
		return b[0] == byte(nl) && b[1] == byte(vl)
	}
	var enc [8]byte
	return b == string(appendLen(appendLen(enc[:0], nl), vl))
}

func appendLen(b []byte, n int) []byte {
	if n < 128 {
		return append(b, byte(n))
	}
	return append(b, byte(n>>24)|0x80, byte(n>>16), byte(n>>8), byte(n))
}

// WriteParams writes pairs as a PARAMS stream for request id, ended by an
// empty PARAMS record. Each record holds whole pairs only, as php-fpm
// requires; a pair that cannot fit one record is refused before anything is
// written.
func (w *Writer) WriteParams(id uint16, pairs []Pair) error {
	return w.WriteParamsFrom(id, pairs, "")
}

// WriteParamsFrom is WriteParams for pairs of which some may have been
// decoded in place from the PARAMS stream raw (Request.RawParams) and kept
// as they came: a run of such pairs is copied from raw in one piece rather
// than encoded a name and a value at a time. The bytes written are those
// WriteParams writes; only the cost differs.
func (w *Writer) WriteParamsFrom(id uint16, pairs []Pair, raw string) error {
	// The usual request: one record, and room for it and the empty one in
	// the buffer. Encode in place, a copy per pair (or per run of pairs
	// from raw) instead of a call per byte.
	if len(pairs) > 0 {
		if b, ok := appendRecord(w.w.AvailableBuffer(), id, pairs, raw); ok {
			_, err := w.w.Write(b)
			return err
		}
	}
	for _, p := range pairs {
		if n := PairSize(p); n > MaxContent {
			return fmt.Errorf("%w: %.64q is %d bytes", ErrParamTooLarge, p.Name, n)
		}
	}
	for len(pairs) > 0 {
		n, size := 0, 0
		for n < len(pairs) && size+PairSize(pairs[n]) <= MaxContent {
			size += PairSize(pairs[n])
			n++
		}
		w.w.Write(appendHeader(w.scratch[:0], TypeParams, id, size))
		for _, p := range pairs[:n] {
			writeLen(w, len(p.Name))
			writeLen(w, len(p.Value))
			w.w.WriteString(p.Name)
			w.w.WriteString(p.Value)
		}
		pairs = pairs[n:]
	}
	return w.WriteRecord(TypeParams, id, nil)
}

func writeLen(w *Writer, n int) {
	if n < 128 {
		w.w.WriteByte(byte(n))
		return
	}
	w.w.WriteByte(byte(n>>24) | 0x80)
	w.w.WriteByte(byte(n >> 16))
	w.w.WriteByte(byte(n >> 8))
	w.w.WriteByte(byte(n))
}
