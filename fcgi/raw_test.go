package fcgi

import (
	"bufio"
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// decodedInPlace returns pairs encoded as a PARAMS stream, decoded in place
// from it as the Server does, and the stream.
func decodedInPlace(t testing.TB, stream []byte) ([]Pair, string) {
	t.Helper()
	pairs, err := DecodeParamsInPlace(nil, stream)
	require.NoError(t, err)
	return pairs, inPlace(stream)
}

func TestRawSpan(t *testing.T) {
	long := strings.Repeat("u", 200)
	in := []Pair{{"A", "1"}, {"EMPTY", ""}, {"UA", long}, {strings.Repeat("N", 130), "v"}}
	enc := encodePairs(in)
	pairs, raw := decodedInPlace(t, enc)

	// Every pair decoded in place is found, the spans one after the other.
	at := 0
	for i, p := range pairs {
		from, to, ok := rawSpan(raw, p)
		require.True(t, ok, "pair %d", i)
		assert.Equal(t, at, from, "pair %d", i)
		assert.Equal(t, string(AppendPair(nil, p)), raw[from:to], "pair %d", i)
		at = to
	}
	assert.Equal(t, len(raw), at)

	// Pairs that are not raw's bytes after their lengths are not.
	for _, tt := range []struct {
		desc string
		p    Pair
	}{
		{"a copy", Pair{"A", "1"}},
		{"name kept, value changed", Pair{pairs[0].Name, "2"}},
		{"value cut short", Pair{pairs[2].Name, pairs[2].Value[:100]}},
		{"value of another pair", Pair{pairs[0].Name, pairs[2].Value}},
		{"name cut short", Pair{pairs[1].Name[:2], ""}},
		{"name from the middle of a value", Pair{pairs[2].Value[10:20], ""}},
		{"no name", Pair{"", pairs[0].Value}},
	} {
		t.Run(tt.desc, func(t *testing.T) {
			_, _, ok := rawSpan(raw, tt.p)
			assert.False(t, ok)
		})
	}
	_, _, ok := rawSpan("", pairs[0])
	assert.False(t, ok, "no stream")
}

// Lengths that came in the 4-byte form though one byte would do are not
// what WriteParams writes: no span starts at them, and what is sent is
// what WriteParams sends.
func TestRawSpanLongFormLengths(t *testing.T) {
	stream := []byte("\x01\x01B2" + "\x80\x00\x00\x01\x01A1" + "\x01\x01C3")
	pairs, raw := decodedInPlace(t, stream)
	require.Equal(t, []Pair{{"B", "2"}, {"A", "1"}, {"C", "3"}}, pairs)
	from, to, ok := rawSpan(raw, pairs[1])
	if ok {
		assert.NotEqual(t, 4, from, "a span starts at the 4-byte length")
		assert.Equal(t, "\x01\x01A1", raw[from:to])
	}
	plain, sent := writeBoth(t, pairs, raw, 4096)
	assert.Equal(t, plain, sent)
}

// writeBoth returns what WriteParams and WriteParamsFrom write for pairs,
// through a buffer of size bytes.
func writeBoth(t testing.TB, pairs []Pair, raw string, size int) (plain, from string) {
	t.Helper()
	write := func(f func(w *Writer) error) string {
		var buf bytes.Buffer
		w := NewWriter(bufio.NewWriterSize(&buf, size))
		require.NoError(t, f(w))
		require.NoError(t, w.Flush())
		return buf.String()
	}
	plain = write(func(w *Writer) error { return w.WriteParams(3, pairs) })
	from = write(func(w *Writer) error { return w.WriteParamsFrom(3, pairs, raw) })
	return plain, from
}

func TestWriteParamsFromSendsTheSame(t *testing.T) {
	in, raw := decodedInPlace(t, encodePairs(append(nginxParams(), Pair{"HTTP_USER_AGENT", strings.Repeat("M", 150)})))
	replaced := func(i int, v string) []Pair {
		out := append([]Pair(nil), in...)
		out[i].Value = v
		return out
	}
	tests := []struct {
		desc  string
		pairs []Pair
	}{
		{"unchanged", in},
		{"one value replaced", replaced(7, "/srv/www/example.com/releases/B/public")},
		{"first and last replaced", func() []Pair {
			out := replaced(0, "a=b")
			out[len(out)-1].Value = "x"
			return out
		}()},
		{"one dropped", append(append([]Pair(nil), in[:5]...), in[6:]...)},
		{"reordered", append(append([]Pair(nil), in[10:]...), in[:10]...)},
		{"one appended", append(append([]Pair(nil), in...), Pair{"PHP_VALUE", "include_path=.:/srv"})},
		{"a value cut short", replaced(5, in[5].Value[:3])},
		{"a pair twice", append(append([]Pair(nil), in...), in[0])},
		{"none raw", nginxParams()},
	}
	for _, tt := range tests {
		for _, size := range []int{4096, 64} {
			plain, from := writeBoth(t, tt.pairs, raw, size)
			assert.Equal(t, plain, from, "%s, buffer %d", tt.desc, size)
		}
	}
}

// Whatever pairs are made from those decoded in place (kept, cut, copied,
// dropped, repeated, in any order), WriteParamsFrom sends what WriteParams
// does.
func FuzzWriteParamsFrom(f *testing.F) {
	f.Add(encodePairs(nginxParams()), []byte{0, 1, 2, 0x43, 0x84, 0xc5, 6, 6})
	f.Add([]byte("\x80\x00\x00\x01\x01A1\x01\x01B2"), []byte{0, 1, 0x41})
	f.Fuzz(func(t *testing.T, stream, ops []byte) {
		in, err := DecodeParamsInPlace(nil, stream)
		if err != nil || len(in) == 0 {
			return
		}
		raw := inPlace(stream)
		var pairs []Pair
		for _, op := range ops {
			p := in[int(op&0x3f)%len(in)]
			switch op >> 6 {
			case 1: // the value cut short
				p.Value = p.Value[:len(p.Value)/2]
			case 2: // a copy
				p = Pair{strings.Clone(p.Name), strings.Clone(p.Value)}
			case 3: // the name cut short
				p.Name = p.Name[:len(p.Name)/2]
			}
			if PairSize(p) > MaxContent {
				return // refused by both, as FuzzDecodeParams checks
			}
			pairs = append(pairs, p)
		}
		for _, size := range []int{64 << 10, 100} {
			plain, from := writeBoth(t, pairs, raw, size)
			if plain != from {
				t.Fatalf("buffer %d: WriteParamsFrom sent %q; WriteParams %q", size, from, plain)
			}
		}
	})
}

// The unchanged runs are copied from the stream: the same bytes, with one
// copy per run instead of two per pair.
func BenchmarkWriteParamsFrom(b *testing.B) {
	in, raw := decodedInPlace(b, encodePairs(nginxParams()))
	pairs := append([]Pair(nil), in...)
	pairs[7].Value = "/srv/www/example.com/releases/B/public" // DOCUMENT_ROOT pinned
	w := NewWriter(bufio.NewWriterSize(discard{}, 16<<10))
	for _, bc := range []struct {
		name string
		raw  string
	}{{"encoded", ""}, {"raw", raw}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := w.WriteParamsFrom(1, pairs, bc.raw); err != nil {
					b.Fatal(err)
				}
				if err := w.Flush(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
