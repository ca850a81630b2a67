package rewrite

import (
	"hash/maphash"
	"math/bits"

	"github.com/incpathd/incpathd/fcgi"
)

// Duplicate names are found with a small open-addressing hash table of
// param indexes, on the stack for ordinary requests: no map, no allocation.
// The table answers, for each param in turn, which param first had its
// name; classify fills win with it: the index of the last param with the
// same name for the first with its name, -1 for the others.
//
// The first try hashes only a name's length and its first and last eight
// bytes, which tells every CGI and header name of a real request apart for
// a few cycles. Names of HTTP_* params come from the client, and a client
// can send many names that agree in those bytes; a probe sequence longer
// than maxProbe gives such input away, and the table is then rebuilt with
// hash/maphash, which reads every byte under a random seed.

// maxProbe is the longest probe sequence the fast hash may cause before the
// table is rebuilt with maphash. At the load factor used (at most 1/2), an
// honest request exceeds it about never.
const maxProbe = 8

var (
	// nameSeed seeds the fallback hash.
	nameSeed = maphash.MakeSeed()
	// fastSeed keeps the fast hash's table order unpredictable.
	fastSeed = maphash.Comparable(nameSeed, 0) | 1
)

// table is that hash table: an entry holds a
// param's index plus one in its low bits (idx) and bits of the name's hash
// above them, so that a probe passes over other names without reading
// them.
type table struct {
	tab   []uint32
	shift uint   // a hash's top bits pick its slot
	mask  uint64 // len(tab) - 1
	idx   uint32 // the bits that hold the index
}

func newTable(tab []uint32, n int) table {
	return table{
		tab:   tab,
		shift: 64 - uint(bits.TrailingZeros(uint(len(tab)))),
		mask:  uint64(len(tab) - 1),
		idx:   uint32(1)<<bits.Len(uint(n)) - 1,
	}
}

// h32 is the bits of hash h a table entry holds above the index.
func h32(h uint64, idx uint32) uint32 { return uint32(h) &^ idx }

// dedup fills win for every param i: the index of the last param with the
// same name if i is the first with its name, else -1. tab must be zeroed.
// It reports whether any name occurs twice.
func dedup(in []fcgi.Pair, win []int32, tab []uint32) (dups bool) {
	dups, ok := dedupWith(in, win, tab, fastHash, maxProbe)
	if !ok {
		clear(tab)
		dups, _ = dedupWith(in, win, tab, strongHash, len(tab))
	}
	return dups
}

// dedupWith is dedup with the hash function hash, giving up (ok false) on a
// probe sequence longer than maxProbe.
func dedupWith(in []fcgi.Pair, win []int32, tab []uint32, hash func(string) uint64, maxProbe int) (dups, ok bool) {
	t := newTable(tab, len(in))
	for i := range in {
		win[i] = int32(i)
		first := t.insert(in, i, hash(in[i].Name), maxProbe)
		if first < 0 {
			return dups, false
		}
		if first != i {
			win[first], win[i] = int32(i), -1
			dups = true
		}
	}
	return dups, true
}

func strongHash(s string) uint64 { return maphash.String(nameSeed, s) }

// insert looks up the name of param i, whose hash is h: it returns the
// first param with that name, or i itself if there is none yet (then i is
// added). It gives up, returning -1, when it would probe more than
// maxProbe slots past the first.
func (t *table) insert(in []fcgi.Pair, i int, h uint64, maxProbe int) int {
	tag := h32(h, t.idx)
	slot := h >> t.shift
	for probe := 0; probe <= maxProbe; probe++ {
		e := t.tab[slot]
		if e == 0 {
			t.tab[slot] = tag | uint32(i+1)
			return i
		}
		if e&^t.idx == tag {
			if f := int(e&t.idx) - 1; in[f].Name == in[i].Name {
				return f
			}
		}
		slot = (slot + 1) & t.mask
	}
	return -1
}

// fastHash mixes a name's length and its first and last eight bytes (or
// what there is of them) with one multiplication; its high bits pick the
// table slot.
func fastHash(s string) uint64 {
	if len(s) >= 8 {
		return mix(load64(s, 0), load64(s, len(s)-8), len(s))
	}
	return mix(loadShort(s), 0, len(s))
}

// mix is fastHash's mixing step, small enough to be inlined.
func mix(a, b uint64, n int) uint64 {
	return ((a ^ fastSeed) + bits.RotateLeft64(b, 31) + uint64(n)) * 0x9e3779b97f4a7c15
}

// loadShort packs a string of fewer than eight bytes into an integer.
func loadShort(s string) uint64 {
	var a uint64
	for i := 0; i < len(s); i++ {
		a = a<<8 | uint64(s[i])
	}
	return a
}

func load64(s string, i int) uint64 {
	s = s[i : i+8]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}
