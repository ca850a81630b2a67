package rewrite

import (
	"hash/maphash"
	"math/bits"

	"github.com/incpathd/incpathd/fcgi"
)

// Duplicate names are found with a small open-addressing hash table of
// param indexes, on the stack for ordinary requests: no map, no allocation.
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

// dedup sets win[i] for every param i: the index of the last param with
// the same name if i is the first with its name, else -1. tab must be
// zeroed, with a power-of-two length of at least 2*len(in).
func dedup(in []fcgi.Pair, win []int32, tab []uint32) {
	if !dedupWith(in, win, tab, false) {
		clear(tab)
		dedupWith(in, win, tab, true)
	}
}

// dedupWith fills win using the fast hash or, if strong, maphash. It
// reports false when the fast hash met a probe sequence longer than
// maxProbe; win and tab are then left half done.
//
// A table entry holds a param's index plus one in its low bits and bits of
// the name's hash above them, so that a probe passes over other names
// without reading them.
func dedupWith(in []fcgi.Pair, win []int32, tab []uint32, strong bool) bool {
	shift := 64 - uint(bits.TrailingZeros(uint(len(tab))))
	mask := uint64(len(tab) - 1)
	idxMask := uint32(1)<<bits.Len(uint(len(in))) - 1
	for i := range in {
		name := in[i].Name
		var h uint64
		if strong {
			h = maphash.String(nameSeed, name)
		} else {
			h = fastHash(name)
		}
		tag := uint32(h) &^ idxMask
		slot := h >> shift
		win[i] = int32(i)
		for probe := 0; ; probe++ {
			t := tab[slot]
			if t == 0 {
				tab[slot] = tag | uint32(i+1)
				break
			}
			if t&^idxMask == tag {
				if f := int(t&idxMask) - 1; in[f].Name == name {
					win[f], win[i] = int32(i), -1
					break
				}
			}
			if !strong && probe == maxProbe {
				return false
			}
			slot = (slot + 1) & mask
		}
	}
	return true
}

// fastHash mixes a name's length and its first and last eight bytes (or
// what there is of them) with one multiplication; its high bits pick the
// table slot. It is small enough to be inlined.
func fastHash(s string) uint64 {
	var a, b uint64
	if len(s) >= 8 {
		a, b = load64(s, 0), load64(s, len(s)-8)
	} else {
		a = loadShort(s)
	}
	return ((a ^ fastSeed) + bits.RotateLeft64(b, 31) + uint64(len(s))) * 0x9e3779b97f4a7c15
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
