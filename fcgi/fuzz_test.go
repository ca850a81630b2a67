package fcgi

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzReader feeds arbitrary bytes to Reader.Next: it must not panic, must
// fail only with the errors it documents, and every record it returns must
// be the bytes of the stream and encode back to the same content.
func FuzzReader(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data))
		off := 0
		for {
			h, content, err := r.Next()
			if err != nil {
				if err != io.EOF && !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrBadVersion) {
					t.Fatalf("got %v; want io.EOF, %v or %v", err, ErrTruncated, ErrBadVersion)
				}
				if err == io.EOF && off != len(data) {
					t.Fatalf("io.EOF at byte %d of %d", off, len(data))
				}
				return
			}
			if h.Version != Version1 || len(content) != int(h.ContentLength) {
				t.Fatalf("header %+v with %d bytes of content", h, len(content))
			}
			if want := data[off+HeaderLen : off+HeaderLen+len(content)]; !bytes.Equal(content, want) {
				t.Fatalf("content at byte %d: got %q; want %q", off, content, want)
			}
			off += HeaderLen + int(h.ContentLength) + int(h.PaddingLength)

			var buf bytes.Buffer
			w := NewWriter(bufio.NewWriter(&buf))
			if err := w.WriteRecord(h.Type, h.ID, content); err != nil {
				t.Fatal(err)
			}
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			h2, content2, err := NewReader(&buf).Next()
			if err != nil {
				t.Fatalf("reading back: %v", err)
			}
			if want := (Header{Version1, h.Type, h.ID, h.ContentLength, 0}); h2 != want {
				t.Fatalf("header read back: got %+v; want %+v", h2, want)
			}
			if !bytes.Equal(content2, content) {
				t.Fatalf("content read back: got %q; want %q", content2, content)
			}
		}
	})
}

// FuzzDecodeParams decodes arbitrary bytes: it must not panic and must fail
// only with ErrBadParams; a count limit must refuse exactly the streams over
// it; what it decodes must encode and decode back to the
// same pairs, both with AppendPair and with WriteParams, whose records must
// each decode alone.
func FuzzDecodeParams(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		pairs, err := DecodeParams(nil, data)
		if err != nil {
			if !errors.Is(err, ErrBadParams) {
				t.Fatalf("got %v; want %v", err, ErrBadParams)
			}
			return
		}
		// The count limit the Server applies: exactly enough pairs pass,
		// one fewer refuses the stream.
		if limited, err := decodeParams(nil, string(data), len(pairs)); err != nil || !equalPairs(limited, pairs) {
			t.Fatalf("limit %d: got %q, %v; want %q", len(pairs), limited, err, pairs)
		}
		if len(pairs) > 0 {
			if _, err := decodeParams(nil, string(data), len(pairs)-1); !errors.Is(err, ErrParamsTooLarge) {
				t.Fatalf("limit %d with %d pairs: got %v; want %v", len(pairs)-1, len(pairs), err, ErrParamsTooLarge)
			}
		}
		enc := encodePairs(pairs)
		if len(enc) > len(data) {
			t.Fatalf("re-encoded to %d bytes from %d", len(enc), len(data))
		}
		again, err := DecodeParams(nil, enc)
		if err != nil {
			t.Fatalf("decoding %q: %v", enc, err)
		}
		if !equalPairs(again, pairs) {
			t.Fatalf("got %q; want %q", again, pairs)
		}

		var buf bytes.Buffer
		w := NewWriter(bufio.NewWriter(&buf))
		err = w.WriteParams(1, pairs)
		tooLarge := false
		for _, p := range pairs {
			tooLarge = tooLarge || PairSize(p) > MaxContent
		}
		if tooLarge {
			if !errors.Is(err, ErrParamTooLarge) || w.Buffered() != 0 {
				t.Fatalf("got %v with %d bytes written; want %v and nothing", err, w.Buffered(), ErrParamTooLarge)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		w.Flush()
		r := NewReader(&buf)
		var got []Pair
		for {
			h, content, err := r.Next()
			if err != nil {
				t.Fatalf("reading records back: %v", err)
			}
			if h.Type != TypeParams || h.ID != 1 {
				t.Fatalf("header %+v", h)
			}
			if len(content) == 0 {
				break
			}
			if got, err = DecodeParams(got, content); err != nil {
				t.Fatalf("record does not decode alone: %v", err)
			}
		}
		if _, _, err := r.Next(); err != io.EOF {
			t.Fatalf("after the empty record: got %v; want io.EOF", err)
		}
		if !equalPairs(got, pairs) {
			t.Fatalf("got %q; want %q", got, pairs)
		}
	})
}

func equalPairs(a, b []Pair) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
