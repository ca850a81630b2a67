package fcgi

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAppendPair(t *testing.T) {
	x := func(n int) string { return strings.Repeat("x", n) }
	y := func(n int) string { return strings.Repeat("y", n) }
	tests := []struct {
		desc string
		p    Pair
		head string // the encoded lengths; name and value follow
	}{
		{"both empty", Pair{"", ""}, "\x00\x00"},
		{"empty value", Pair{"A", ""}, "\x01\x00"},
		{"empty name", Pair{"", "v"}, "\x00\x01"},
		{"short", Pair{"SCRIPT_NAME", "/index.php"}, "\x0b\x0a"},
		{"127: last 1-byte length", Pair{x(127), y(127)}, "\x7f\x7f"},
		{"128: first 4-byte length", Pair{x(128), y(128)}, "\x80\x00\x00\x80\x80\x00\x00\x80"},
		{"short name, 128 value", Pair{"Q", y(128)}, "\x01\x80\x00\x00\x80"},
		{"128 name, short value", Pair{x(128), "v"}, "\x80\x00\x00\x80\x01"},
		{"300", Pair{"N", y(300)}, "\x01\x80\x00\x01\x2c"},
		{"65535", Pair{"N", y(65535)}, "\x01\x80\x00\xff\xff"},
		{"65536", Pair{x(65536), ""}, "\x80\x01\x00\x00\x00"},
		{"1<<20", Pair{"BIG", y(1 << 20)}, "\x03\x80\x10\x00\x00"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			want := tt.head + tt.p.Name + tt.p.Value
			got := AppendPair([]byte("prefix"), tt.p)
			if string(got) != "prefix"+want {
				t.Errorf("got %q; want %q", trim(got[6:]), trim([]byte(want)))
			}
			assert.Equal(t, len(want), PairSize(tt.p))
			pairs, err := DecodeParams(nil, got[6:])
			require.NoError(t, err)
			assert.Equal(t, []Pair{tt.p}, pairs)
		})
	}
}

func TestDecodeParams(t *testing.T) {
	tests := []struct {
		desc  string
		input string
		want  []Pair
	}{
		{"empty", "", nil},
		{"one", "\x04\x03HOSTa.b", []Pair{{"HOST", "a.b"}}},
		{"empty name and value", "\x00\x00", []Pair{{"", ""}}},
		{"two, order kept", "\x01\x01BA\x01\x01AB", []Pair{{"B", "A"}, {"A", "B"}}},
		{"duplicates kept", "\x01\x01A1\x01\x01A2", []Pair{{"A", "1"}, {"A", "2"}}},
		{"4-byte lengths for short strings", "\x80\x00\x00\x01\x80\x00\x00\x02Nvv", []Pair{{"N", "vv"}}},
		{"4-byte length, top bit masked", "\x01\x80\x00\x00\x03Nabc", []Pair{{"N", "abc"}}},
		{"binary bytes kept", "\x02\x02\x00\xff\n\r", []Pair{{"\x00\xff", "\n\r"}}},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			got, err := DecodeParams(nil, []byte(tt.input))
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestDecodeParamsAppends(t *testing.T) {
	dst := []Pair{{"KEPT", "1"}}
	got, err := DecodeParams(dst, []byte("\x01\x01AB"))
	require.NoError(t, err)
	assert.Equal(t, []Pair{{"KEPT", "1"}, {"A", "B"}}, got)
}

// A PARAMS stream arrives split into records at pair boundaries; the
// concatenation of their contents decodes to all pairs in order.
func TestDecodeParamsConcatenation(t *testing.T) {
	a := []Pair{{"REQUEST_METHOD", "GET"}, {"QUERY_STRING", ""}}
	b := []Pair{{"LONG", strings.Repeat("v", 200)}, {strings.Repeat("n", 130), "x"}}
	var ea, eb []byte
	for _, p := range a {
		ea = AppendPair(ea, p)
	}
	for _, p := range b {
		eb = AppendPair(eb, p)
	}
	got, err := DecodeParams(nil, append(append([]byte(nil), ea...), eb...))
	require.NoError(t, err)
	assert.Equal(t, append(append([]Pair(nil), a...), b...), got)

	got, err = DecodeParams(nil, ea)
	require.NoError(t, err)
	got, err = DecodeParams(got, eb)
	require.NoError(t, err)
	assert.Equal(t, append(append([]Pair(nil), a...), b...), got)
}

// Decoded strings must not alias the input: the server reuses its buffer.
func TestDecodeParamsCopies(t *testing.T) {
	b := []byte("\x01\x01AB")
	got, err := DecodeParams(nil, b)
	require.NoError(t, err)
	copy(b, "\x01\x01XY")
	assert.Equal(t, []Pair{{"A", "B"}}, got)
}

func TestDecodeParamsMalformed(t *testing.T) {
	tests := []struct {
		desc  string
		input string
	}{
		{"name length only", "\x05"},
		{"value length missing", "\x01"},
		{"short 4-byte name length", "\x80\x00\x01"},
		{"short 4-byte value length", "\x01\x80\x00"},
		{"name past the end", "\x05\x00ABCD"},
		{"value past the end", "\x01\x05Aabcd"},
		{"huge 4-byte length", "\xff\xff\xff\xff\x00"},
		{"both huge", "\xff\xff\xff\xff\xff\xff\xff\xff"},
		{"good pair then junk", "\x01\x01AB\x03"},
		{"good pair then short", "\x01\x01AB\x02\x02AB"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			_, err := DecodeParams(nil, []byte(tt.input))
			if !errors.Is(err, ErrBadParams) {
				t.Errorf("got %v; want %v", err, ErrBadParams)
			}
		})
	}
}

func TestDecodeParamsAllocs(t *testing.T) {
	b := encodePairs(nginxParams())
	dst := make([]Pair, 0, 64)
	allocs := testing.AllocsPerRun(100, func() {
		var err error
		if dst, err = DecodeParams(dst[:0], b); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 1 {
		t.Errorf("got %v allocations; want 1", allocs)
	}
}

func encodePairs(pairs []Pair) []byte {
	var b []byte
	for _, p := range pairs {
		b = AppendPair(b, p)
	}
	return b
}

func TestWriteParamsEncoding(t *testing.T) {
	tests := []struct {
		desc  string
		pairs []Pair
		want  string
	}{
		{"none: the empty record only", nil, "\x01\x04\x00\x01\x00\x00\x00\x00"},
		{
			"one pair",
			[]Pair{{"HOST", "a.b"}},
			"\x01\x04\x00\x01\x00\x09\x00\x00\x04\x03HOSTa.b" + "\x01\x04\x00\x01\x00\x00\x00\x00",
		},
		{
			"two pairs, one record",
			[]Pair{{"A", ""}, {"B", strings.Repeat("v", 128)}},
			"\x01\x04\x00\x01\x00\x89\x00\x00" + "\x01\x00A" + "\x01\x80\x00\x00\x80B" + strings.Repeat("v", 128) +
				"\x01\x04\x00\x01\x00\x00\x00\x00",
		},
	}
	for _, tt := range tests {
		// A buffer with room for the whole stream takes the path that
		// encodes in place; a small one, or one partly filled, the other.
		// A buffer of exactly the stream's size still has room.
		for _, size := range []int{4096, 16, len(tt.want), len(tt.want) - 1} {
			for _, fill := range []int{0, 10} {
				t.Run(fmt.Sprintf("%s/buffer %d filled %d", tt.desc, size, fill), func(t *testing.T) {
					var buf bytes.Buffer
					bw := bufio.NewWriterSize(&buf, size)
					bw.WriteString(strings.Repeat("x", fill))
					w := NewWriter(bw)
					require.NoError(t, w.WriteParams(1, tt.pairs))
					require.NoError(t, w.Flush())
					if got := strings.TrimPrefix(buf.String(), strings.Repeat("x", fill)); got != tt.want {
						t.Errorf("got %q; want %q", got, tt.want)
					}
				})
			}
		}
	}
}

// php-fpm parses each PARAMS record on its own: every record must hold
// whole pairs and decode alone.
func TestWriteParamsSplits(t *testing.T) {
	big := func(name string, n int) Pair { return Pair{name, strings.Repeat("v", n)} }
	// Largest value that makes a pair of exactly MaxContent bytes with a
	// one-byte name: 1 + 4 (lengths) + 1 (name).
	maxValue := MaxContent - 6
	tests := []struct {
		desc    string
		pairs   []Pair
		records int // PARAMS records with content
	}{
		{"30 small", nginxParams(), 1},
		{"many mid-size", func() []Pair {
			var ps []Pair
			for i := range 40 {
				ps = append(ps, big(fmt.Sprintf("P%02d", i), 5000))
			}
			return ps
		}(), 4},
		{"one pair of exactly MaxContent", []Pair{big("N", maxValue)}, 1},
		{"two pairs of MaxContent", []Pair{big("N", maxValue), big("M", maxValue)}, 2},
		{"small, max, small", []Pair{{"A", "1"}, big("N", maxValue), {"B", "2"}}, 3},
		{"fills exactly, then one more", []Pair{big("N", maxValue-3), {"", ""}, {"", ""}}, 2},
		{"many empty pairs", make([]Pair, 40000), 2},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			var buf bytes.Buffer
			w := NewWriter(bufio.NewWriter(&buf))
			require.NoError(t, w.WriteParams(7, tt.pairs))
			require.NoError(t, w.Flush())
			recs := readAllRaw(t, buf.Bytes())
			require.NotEmpty(t, recs)
			last := recs[len(recs)-1]
			assert.Empty(t, last.Content, "stream must end with an empty record")
			recs = recs[:len(recs)-1]
			assert.Len(t, recs, tt.records)
			var all []Pair
			for i, r := range recs {
				assert.Equal(t, TypeParams, r.Type)
				assert.Equal(t, uint16(7), r.ID)
				assert.NotEmpty(t, r.Content, "record %d: empty record inside the stream", i)
				assert.LessOrEqual(t, len(r.Content), MaxContent)
				ps, err := DecodeParams(nil, r.Content)
				require.NoError(t, err, "record %d does not decode alone", i)
				all = append(all, ps...)
			}
			want := tt.pairs
			if len(want) == 0 {
				want = nil
			}
			assert.Equal(t, want, all)
		})
	}
}

func TestWriteParamsTooLarge(t *testing.T) {
	tests := []struct {
		desc  string
		pairs []Pair
	}{
		{"one byte over", []Pair{{"N", strings.Repeat("v", MaxContent-5)}}},
		{"1 MiB value after good pairs", []Pair{{"A", "1"}, {"BIG", strings.Repeat("v", 1<<20)}}},
		{"huge name", []Pair{{strings.Repeat("n", 70000), ""}}},
	}
	for _, tt := range tests {
		// A buffer large enough for the pair tries it in place first.
		for _, size := range []int{4096, 2 << 20} {
			t.Run(fmt.Sprintf("%s/buffer %d", tt.desc, size), func(t *testing.T) {
				var buf bytes.Buffer
				bw := bufio.NewWriterSize(&buf, size)
				w := NewWriter(bw)
				err := w.WriteParams(1, tt.pairs)
				require.ErrorIs(t, err, ErrParamTooLarge)
				assert.Zero(t, w.Buffered(), "nothing may be written")
				require.NoError(t, bw.Flush())
				assert.Zero(t, buf.Len(), "nothing may be written")
				assert.Less(t, len(err.Error()), 200, "error message repeats the pair: %.80q", err.Error())
			})
		}
	}
}

// nginxParams is what nginx 1.22 sends for a GET with the stock
// fastcgi_params, plus a few request headers.
func nginxParams() []Pair {
	return []Pair{
		{"QUERY_STRING", "page=2&sort=desc"},
		{"REQUEST_METHOD", "GET"},
		{"CONTENT_TYPE", ""},
		{"CONTENT_LENGTH", ""},
		{"SCRIPT_NAME", "/index.php"},
		{"REQUEST_URI", "/blog/2024/05/some-article-title?page=2&sort=desc"},
		{"DOCUMENT_URI", "/index.php"},
		{"DOCUMENT_ROOT", "/srv/www/example.com/current/public"},
		{"SERVER_PROTOCOL", "HTTP/1.1"},
		{"REQUEST_SCHEME", "https"},
		{"HTTPS", "on"},
		{"GATEWAY_INTERFACE", "CGI/1.1"},
		{"SERVER_SOFTWARE", "nginx/1.22.1"},
		{"REMOTE_ADDR", "203.0.113.42"},
		{"REMOTE_PORT", "51234"},
		{"REMOTE_USER", ""},
		{"SERVER_ADDR", "10.0.0.5"},
		{"SERVER_PORT", "443"},
		{"SERVER_NAME", "example.com"},
		{"REDIRECT_STATUS", "200"},
		{"SCRIPT_FILENAME", "/srv/www/example.com/current/public/index.php"},
		{"PATH_INFO", ""},
		{"HTTP_HOST", "example.com"},
		{"HTTP_USER_AGENT", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"},
		{"HTTP_ACCEPT", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"},
		{"HTTP_ACCEPT_LANGUAGE", "en-US,en;q=0.5"},
		{"HTTP_ACCEPT_ENCODING", "gzip, deflate, br, zstd"},
		{"HTTP_COOKIE", "session=6f1c2a9e0b7d4c3f8a5e2d1b0c9f8e7d; theme=dark; consent=1"},
		{"HTTP_REFERER", "https://example.com/blog/"},
		{"HTTP_CONNECTION", "keep-alive"},
	}
}
