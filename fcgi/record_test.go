package fcgi

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestWriteRecordEncoding(t *testing.T) {
	tests := []struct {
		desc    string
		typ     uint8
		id      uint16
		content string
		want    string
	}{
		{"begin", TypeBeginRequest, 1, "\x00\x01\x01\x00\x00\x00\x00\x00", "\x01\x01\x00\x01\x00\x08\x00\x00\x00\x01\x01\x00\x00\x00\x00\x00"},
		{"abort", TypeAbortRequest, 1, "", "\x01\x02\x00\x01\x00\x00\x00\x00"},
		{"end", TypeEndRequest, 1, "\x00\x00\x00\x00\x00\x00\x00\x00", "\x01\x03\x00\x01\x00\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"},
		{"params", TypeParams, 1, "\x01\x02ABC", "\x01\x04\x00\x01\x00\x05\x00\x00\x01\x02ABC"},
		{"stdin", TypeStdin, 258, "body", "\x01\x05\x01\x02\x00\x04\x00\x00body"},
		{"stdout", TypeStdout, 1, "hi", "\x01\x06\x00\x01\x00\x02\x00\x00hi"},
		{"stderr", TypeStderr, 0xffff, "oops", "\x01\x07\xff\xff\x00\x04\x00\x00oops"},
		{"data", TypeData, 1, "d", "\x01\x08\x00\x01\x00\x01\x00\x00d"},
		{"get values", TypeGetValues, 0, "\x0e\x00FCGI_MAX_CONNS", "\x01\x09\x00\x00\x00\x10\x00\x00\x0e\x00FCGI_MAX_CONNS"},
		{"get values result", TypeGetValuesResult, 0, "\x0f\x01FCGI_MPXS_CONNS0", "\x01\x0a\x00\x00\x00\x12\x00\x00\x0f\x01FCGI_MPXS_CONNS0"},
		{"unknown type", TypeUnknownType, 0, "\x0c\x00\x00\x00\x00\x00\x00\x00", "\x01\x0b\x00\x00\x00\x08\x00\x00\x0c\x00\x00\x00\x00\x00\x00\x00"},
		{"empty stdout ends the stream", TypeStdout, 1, "", "\x01\x06\x00\x01\x00\x00\x00\x00"},
		{"300 bytes: length in both bytes", TypeStdout, 1, strings.Repeat("x", 300), "\x01\x06\x00\x01\x01\x2c\x00\x00" + strings.Repeat("x", 300)},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			var buf bytes.Buffer
			bw := bufio.NewWriter(&buf)
			w := NewWriter(bw)
			require.NoError(t, w.WriteRecord(tt.typ, tt.id, []byte(tt.content)))
			assert.Equal(t, len(tt.want), w.Buffered())
			require.NoError(t, w.Flush())
			if got := buf.String(); got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}

func TestWriteBeginEndRequest(t *testing.T) {
	tests := []struct {
		desc  string
		write func(w *Writer) error
		want  string
	}{
		{
			"begin responder keep-conn",
			func(w *Writer) error { return w.WriteBeginRequest(1, RoleResponder, FlagKeepConn) },
			"\x01\x01\x00\x01\x00\x08\x00\x00" + "\x00\x01\x01\x00\x00\x00\x00\x00",
		},
		{
			"begin authorizer, id 0x1234",
			func(w *Writer) error { return w.WriteBeginRequest(0x1234, RoleAuthorizer, 0) },
			"\x01\x01\x12\x34\x00\x08\x00\x00" + "\x00\x02\x00\x00\x00\x00\x00\x00",
		},
		{
			"end complete",
			func(w *Writer) error { return w.WriteEndRequest(1, 0, StatusRequestComplete) },
			"\x01\x03\x00\x01\x00\x08\x00\x00" + "\x00\x00\x00\x00\x00\x00\x00\x00",
		},
		{
			"end app status and unknown role",
			func(w *Writer) error { return w.WriteEndRequest(2, 0x01020304, StatusUnknownRole) },
			"\x01\x03\x00\x02\x00\x08\x00\x00" + "\x01\x02\x03\x04\x03\x00\x00\x00",
		},
		{
			"end cant mpx",
			func(w *Writer) error { return w.WriteEndRequest(3, 0xffffffff, StatusCantMpxConn) },
			"\x01\x03\x00\x03\x00\x08\x00\x00" + "\xff\xff\xff\xff\x01\x00\x00\x00",
		},
		{
			"end overloaded",
			func(w *Writer) error { return w.WriteEndRequest(1, 0, StatusOverloaded) },
			"\x01\x03\x00\x01\x00\x08\x00\x00" + "\x00\x00\x00\x00\x02\x00\x00\x00",
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			var buf bytes.Buffer
			w := NewWriter(bufio.NewWriter(&buf))
			require.NoError(t, tt.write(w))
			require.NoError(t, w.Flush())
			if got := buf.String(); got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}

func TestParseBeginEndRequest(t *testing.T) {
	br, err := ParseBeginRequest([]byte{0, 1, 1, 0, 0, 0, 0, 0})
	require.NoError(t, err)
	assert.Equal(t, BeginRequest{Role: RoleResponder, Flags: FlagKeepConn}, br)

	br, err = ParseBeginRequest([]byte{0x01, 0x02, 0xfe, 9, 9, 9, 9, 9})
	require.NoError(t, err)
	assert.Equal(t, BeginRequest{Role: 0x0102, Flags: 0xfe}, br)

	_, err = ParseBeginRequest([]byte{0, 1, 1})
	assert.Error(t, err)

	er, err := ParseEndRequest([]byte{0x01, 0x02, 0x03, 0x04, StatusCantMpxConn, 0, 0, 0})
	require.NoError(t, err)
	assert.Equal(t, EndRequest{AppStatus: 0x01020304, ProtocolStatus: StatusCantMpxConn}, er)

	_, err = ParseEndRequest(make([]byte, 7))
	assert.Error(t, err)
}

func TestWriteRecordSplits(t *testing.T) {
	tests := []struct {
		desc string
		n    int
		want []int // content lengths of the records written
	}{
		{"empty", 0, []int{0}},
		{"one byte", 1, []int{1}},
		{"exactly one record", MaxContent, []int{MaxContent}},
		{"one over", MaxContent + 1, []int{MaxContent, 1}},
		{"exactly two", 2 * MaxContent, []int{MaxContent, MaxContent}},
		{"1 MiB", 1 << 20, []int{MaxContent, MaxContent, MaxContent, MaxContent, MaxContent, MaxContent, MaxContent, MaxContent, MaxContent, MaxContent, MaxContent, MaxContent, MaxContent, MaxContent, MaxContent, MaxContent, 16}},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			content := make([]byte, tt.n)
			for i := range content {
				content[i] = byte(i * 7)
			}
			var buf bytes.Buffer
			w := NewWriter(bufio.NewWriter(&buf))
			require.NoError(t, w.WriteRecord(TypeStdout, 9, content))
			require.NoError(t, w.Flush())
			recs := readAllRaw(t, buf.Bytes())
			var lens []int
			var joined []byte
			for _, r := range recs {
				assert.Equal(t, Version1, r.Version)
				assert.Equal(t, TypeStdout, r.Type)
				assert.Equal(t, uint16(9), r.ID)
				assert.Zero(t, r.PaddingLength)
				lens = append(lens, len(r.Content))
				joined = append(joined, r.Content...)
			}
			assert.Equal(t, tt.want, lens)
			assert.True(t, bytes.Equal(content, joined), "content changed in transit")
		})
	}
}

// failWriter fails every write.
type failWriter struct{}

var errWrite = errors.New("write failed")

func (failWriter) Write(p []byte) (int, error) { return 0, errWrite }

func TestWriterReportsErrors(t *testing.T) {
	w := NewWriter(bufio.NewWriterSize(failWriter{}, 16))
	// Larger than the buffer, so the write reaches failWriter at once.
	err := w.WriteRecord(TypeStdout, 1, make([]byte, 100))
	assert.ErrorIs(t, err, errWrite)
	assert.ErrorIs(t, w.WriteRecord(TypeStdout, 1, nil), errWrite)
	assert.ErrorIs(t, w.WriteParams(1, []Pair{{"A", "B"}}), errWrite)
	assert.ErrorIs(t, w.Flush(), errWrite)
}

func TestReaderNext(t *testing.T) {
	stream := cat(
		beginRec(1, RoleResponder, FlagKeepConn),
		rec(TypeParams, 1, []byte("\x01\x01AB"), 3),
		rec(TypeParams, 1, nil, 0),
		rec(TypeStdin, 1, []byte("hello"), 255),
		rec(TypeStdin, 1, nil, 7),
		rec(TypeGetValues, 0, nil, 0),
		rec(TypeStdout, 0xfffe, bytes.Repeat([]byte{'z'}, MaxContent), 255),
	)
	type rd struct {
		typ     uint8
		id      uint16
		pad     uint8
		content string
	}
	want := []rd{
		{TypeBeginRequest, 1, 0, "\x00\x01\x01\x00\x00\x00\x00\x00"},
		{TypeParams, 1, 3, "\x01\x01AB"},
		{TypeParams, 1, 0, ""},
		{TypeStdin, 1, 255, "hello"},
		{TypeStdin, 1, 7, ""},
		{TypeGetValues, 0, 0, ""},
		{TypeStdout, 0xfffe, 255, strings.Repeat("z", MaxContent)},
	}
	readers := map[string]func() io.Reader{
		"whole":       func() io.Reader { return bytes.NewReader(stream) },
		"byte a time": func() io.Reader { return iotest.OneByteReader(bytes.NewReader(stream)) },
		"half":        func() io.Reader { return iotest.HalfReader(bytes.NewReader(stream)) },
		"data+EOF":    func() io.Reader { return iotest.DataErrReader(bytes.NewReader(stream)) },
	}
	for name, mk := range readers {
		t.Run(name, func(t *testing.T) {
			r := NewReader(mk())
			for i, w := range want {
				h, content, err := r.Next()
				require.NoError(t, err, "record %d", i)
				assert.Equal(t, Header{Version: Version1, Type: w.typ, ID: w.id, ContentLength: uint16(len(w.content)), PaddingLength: w.pad}, h, "record %d", i)
				if string(content) != w.content {
					t.Errorf("record %d: got %q; want %q", i, trim(content), trim([]byte(w.content)))
				}
			}
			_, _, err := r.Next()
			assert.Equal(t, io.EOF, err)
			_, _, err = r.Next()
			assert.Equal(t, io.EOF, err, "EOF again")
		})
	}
}

func trim(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "..."
	}
	return string(b)
}

func TestReaderBuffered(t *testing.T) {
	stream := cat(rec(TypeStdout, 1, []byte("abc"), 5), rec(TypeStdout, 1, nil, 0))
	r := NewReader(bytes.NewReader(stream))
	assert.Zero(t, r.Buffered())
	_, _, err := r.Next()
	require.NoError(t, err)
	assert.Equal(t, HeaderLen, r.Buffered(), "only the second record is left")
	_, _, err = r.Next()
	require.NoError(t, err)
	assert.Zero(t, r.Buffered())
}

func TestReaderErrors(t *testing.T) {
	full := rec(TypeStdout, 1, []byte("content"), 4)
	tests := []struct {
		desc  string
		input []byte
		want  error
	}{
		{"empty stream", nil, io.EOF},
		{"one byte of header", full[:1], ErrTruncated},
		{"seven bytes of header", full[:7], ErrTruncated},
		{"header only", full[:8], ErrTruncated},
		{"truncated content", full[:12], ErrTruncated},
		{"truncated padding", full[:len(full)-1], ErrTruncated},
		{"version 0", append([]byte{0}, full[1:]...), ErrBadVersion},
		{"version 2", append([]byte{2}, full[1:]...), ErrBadVersion},
		{"version 2, short", []byte{2, 6, 0, 1, 0, 0xff, 0, 0}, ErrBadVersion},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			r := NewReader(bytes.NewReader(tt.input))
			_, _, err := r.Next()
			if !errors.Is(err, tt.want) {
				t.Errorf("got %v; want %v", err, tt.want)
			}
		})
	}

	t.Run("after a good record", func(t *testing.T) {
		r := NewReader(bytes.NewReader(cat(full, full[:9])))
		_, content, err := r.Next()
		require.NoError(t, err)
		assert.Equal(t, "content", string(content))
		_, _, err = r.Next()
		assert.ErrorIs(t, err, ErrTruncated)
	})

	t.Run("read error passed on", func(t *testing.T) {
		errBroken := errors.New("broken")
		r := NewReader(io.MultiReader(bytes.NewReader(full[:10]), iotest.ErrReader(errBroken)))
		_, _, err := r.Next()
		assert.ErrorIs(t, err, errBroken)
	})
}
