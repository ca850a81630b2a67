package fcgi

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Record types (FastCGI 1.0, section 8).
const (
	TypeBeginRequest    uint8 = 1
	TypeAbortRequest    uint8 = 2
	TypeEndRequest      uint8 = 3
	TypeParams          uint8 = 4
	TypeStdin           uint8 = 5
	TypeStdout          uint8 = 6
	TypeStderr          uint8 = 7
	TypeData            uint8 = 8
	TypeGetValues       uint8 = 9
	TypeGetValuesResult uint8 = 10
	TypeUnknownType     uint8 = 11
)

// Roles carried by BEGIN_REQUEST.
const (
	RoleResponder  uint16 = 1
	RoleAuthorizer uint16 = 2
	RoleFilter     uint16 = 3
)

// FlagKeepConn in BEGIN_REQUEST asks the application to keep the
// connection open after END_REQUEST.
const FlagKeepConn uint8 = 1

// Protocol status values carried by END_REQUEST.
const (
	StatusRequestComplete uint8 = 0
	StatusCantMpxConn     uint8 = 1
	StatusOverloaded      uint8 = 2
	StatusUnknownRole     uint8 = 3
)

const (
	// Version1 is the only FastCGI version there is.
	Version1 uint8 = 1
	// HeaderLen is the size of a record header.
	HeaderLen = 8
	// MaxContent is the most content one record carries.
	MaxContent = 65535
	maxPadding = 255
)

var (
	// ErrBadVersion is returned for a record whose version is not 1.
	ErrBadVersion = errors.New("fcgi: unsupported record version")
	// ErrTruncated is returned when a stream ends inside a record.
	ErrTruncated = errors.New("fcgi: truncated record")
)

// Header is a record header.
type Header struct {
	Version       uint8
	Type          uint8
	ID            uint16
	ContentLength uint16
	PaddingLength uint8
}

func (h *Header) decode(b []byte) {
	h.Version = b[0]
	h.Type = b[1]
	h.ID = binary.BigEndian.Uint16(b[2:])
	h.ContentLength = binary.BigEndian.Uint16(b[4:])
	h.PaddingLength = b[6]
}

// appendHeader appends the header of a record of type t for request id
// with n bytes of content and no padding.
func appendHeader(b []byte, t uint8, id uint16, n int) []byte {
	return append(b, Version1, t, byte(id>>8), byte(id), byte(n>>8), byte(n), 0, 0)
}

// Reader reads records from a stream without copying them: the content a
// call to Next returns points into the read buffer and is valid until the
// following call.
type Reader struct {
	r       *bufio.Reader
	discard int
}

// readerSize holds a whole record, so Next can hand it out in place.
const readerSize = HeaderLen + MaxContent + maxPadding

// NewReader returns a Reader that reads records from r.
func NewReader(r io.Reader) *Reader { return &Reader{r: bufio.NewReaderSize(r, readerSize)} }

// Next reads one record. At a clean end of stream, between records, it
// returns io.EOF; inside a record, ErrTruncated.
func (r *Reader) Next() (Header, []byte, error) {
	var h Header
	if r.discard > 0 {
		r.r.Discard(r.discard)
		r.discard = 0
	}
	hb, err := r.r.Peek(HeaderLen)
	if err != nil {
		if err == io.EOF && len(hb) > 0 {
			err = ErrTruncated
		}
		return h, nil, err
	}
	h.decode(hb)
	if h.Version != Version1 {
		return h, nil, fmt.Errorf("%w %d (type %d)", ErrBadVersion, h.Version, h.Type)
	}
	n := HeaderLen + int(h.ContentLength) + int(h.PaddingLength)
	rec, err := r.r.Peek(n)
	if err != nil {
		if err == io.EOF {
			err = ErrTruncated
		}
		return h, nil, err
	}
	r.discard = n
	return h, rec[HeaderLen : HeaderLen+int(h.ContentLength)], nil
}

// Buffered reports how many bytes of records can be read without blocking.
func (r *Reader) Buffered() int { return r.r.Buffered() - r.discard }

// wait waits for the first byte of the next record.
func (r *Reader) wait() error {
	if r.discard > 0 {
		r.r.Discard(r.discard)
		r.discard = 0
	}
	_, err := r.r.Peek(1)
	return err
}

// headBuffered reports whether the buffer holds a whole request head: a
// BEGIN_REQUEST and, after it, the empty PARAMS record that ends its params,
// every record between them whole. Reading such a head needs no read from
// the stream. It looks at records in place and consumes nothing.
func (r *Reader) headBuffered() bool {
	b, _ := r.r.Peek(r.r.Buffered())
	b = b[min(r.discard, len(b)):]
	var h Header
	var id uint16
	for first := true; len(b) >= HeaderLen; first = false {
		h.decode(b)
		n := HeaderLen + int(h.ContentLength) + int(h.PaddingLength)
		switch {
		case h.Version != Version1 || len(b) < n:
			return false
		case first && h.Type != TypeBeginRequest:
			return false
		case first:
			id = h.ID
		case h.Type == TypeParams && h.ID == id && h.ContentLength == 0:
			return true
		}
		b = b[n:]
	}
	return false
}

// peekHeader waits for the next record's header without consuming it.
func (r *Reader) peekHeader() (Header, error) {
	var h Header
	if r.discard > 0 {
		r.r.Discard(r.discard)
		r.discard = 0
	}
	hb, err := r.r.Peek(HeaderLen)
	if err != nil {
		return h, err
	}
	h.decode(hb)
	return h, nil
}

// Writer writes records to a buffered stream. Content longer than
// MaxContent is split over several records. Writer does not pad: padding is
// optional and costs bytes on loopback without gaining anything.
type Writer struct {
	w *bufio.Writer
	// scratch holds a header, or a whole record of a fixed-size type:
	// bytes handed to bufio.Writer.Write escape, and this array lives as
	// long as the Writer, so writing them allocates nothing.
	scratch [2 * HeaderLen]byte
}

// NewWriter returns a Writer that writes records to bw.
func NewWriter(bw *bufio.Writer) *Writer { return &Writer{w: bw} }

// WriteRecord writes content as records of type t for request id. Empty
// content writes one empty record, which ends a stream.
func (w *Writer) WriteRecord(t uint8, id uint16, content []byte) error {
	for {
		n := min(len(content), MaxContent)
		w.w.Write(appendHeader(w.scratch[:0], t, id, n))
		if _, err := w.w.Write(content[:n]); err != nil {
			return err
		}
		content = content[n:]
		if len(content) == 0 {
			return nil
		}
	}
}

// WriteBeginRequest writes a BEGIN_REQUEST record.
func (w *Writer) WriteBeginRequest(id uint16, role uint16, flags uint8) error {
	b := appendHeader(w.scratch[:0], TypeBeginRequest, id, 8)
	b = append(b, byte(role>>8), byte(role), flags, 0, 0, 0, 0, 0)
	_, err := w.w.Write(b)
	return err
}

// WriteEndRequest writes an END_REQUEST record.
func (w *Writer) WriteEndRequest(id uint16, appStatus uint32, protoStatus uint8) error {
	b := appendHeader(w.scratch[:0], TypeEndRequest, id, 8)
	b = binary.BigEndian.AppendUint32(b, appStatus)
	b = append(b, protoStatus, 0, 0, 0)
	_, err := w.w.Write(b)
	return err
}

// Flush writes buffered records to the stream.
func (w *Writer) Flush() error { return w.w.Flush() }

// Buffered reports how many bytes wait to be flushed.
func (w *Writer) Buffered() int { return w.w.Buffered() }

// BeginRequest is the body of a BEGIN_REQUEST record.
type BeginRequest struct {
	Role  uint16
	Flags uint8
}

// ParseBeginRequest decodes the body of a BEGIN_REQUEST record.
func ParseBeginRequest(b []byte) (BeginRequest, error) {
	if len(b) < 8 {
		return BeginRequest{}, fmt.Errorf("fcgi: BEGIN_REQUEST body of %d bytes, want 8", len(b))
	}
	return BeginRequest{Role: binary.BigEndian.Uint16(b), Flags: b[2]}, nil
}

// EndRequest is the body of an END_REQUEST record.
type EndRequest struct {
	AppStatus      uint32
	ProtocolStatus uint8
}

// ParseEndRequest decodes the body of an END_REQUEST record.
func ParseEndRequest(b []byte) (EndRequest, error) {
	if len(b) < 8 {
		return EndRequest{}, fmt.Errorf("fcgi: END_REQUEST body of %d bytes, want 8", len(b))
	}
	return EndRequest{AppStatus: binary.BigEndian.Uint32(b), ProtocolStatus: b[4]}, nil
}
