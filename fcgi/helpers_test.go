package fcgi

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"testing"
)

// rec encodes one record by hand, with pad bytes of padding, so the tests
// of the Reader and the Server do not depend on the Writer they check.
func rec(typ uint8, id uint16, content []byte, pad int) []byte {
	b := []byte{Version1, typ, byte(id >> 8), byte(id), byte(len(content) >> 8), byte(len(content)), byte(pad), 0}
	b = append(b, content...)
	return append(b, make([]byte, pad)...)
}

func beginRec(id uint16, role uint16, flags uint8) []byte {
	return rec(TypeBeginRequest, id, []byte{byte(role >> 8), byte(role), flags, 0, 0, 0, 0, 0}, 0)
}

// paramsRecs encodes pairs as one PARAMS record and the empty one that ends
// the stream; no pairs, the empty record only.
func paramsRecs(id uint16, pairs ...Pair) []byte {
	if len(pairs) == 0 {
		return rec(TypeParams, id, nil, 0)
	}
	var content []byte
	for _, p := range pairs {
		content = AppendPair(content, p)
	}
	return cat(rec(TypeParams, id, content, 0), rec(TypeParams, id, nil, 0))
}

func cat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

// rawRecord is a record read by readRaw.
type rawRecord struct {
	Header
	Content []byte
}

// readRaw reads one record without the package's Reader.
func readRaw(r io.Reader) (rawRecord, error) {
	var hb [HeaderLen]byte
	if _, err := io.ReadFull(r, hb[:]); err != nil {
		return rawRecord{}, err
	}
	var rr rawRecord
	rr.Version = hb[0]
	rr.Type = hb[1]
	rr.ID = binary.BigEndian.Uint16(hb[2:])
	rr.ContentLength = binary.BigEndian.Uint16(hb[4:])
	rr.PaddingLength = hb[6]
	body := make([]byte, int(rr.ContentLength)+int(rr.PaddingLength))
	if _, err := io.ReadFull(r, body); err != nil {
		return rawRecord{}, err
	}
	rr.Content = body[:rr.ContentLength]
	return rr, nil
}

// readAllRaw reads records until the end of b.
func readAllRaw(t *testing.T, b []byte) []rawRecord {
	t.Helper()
	r := bufio.NewReader(bytes.NewReader(b))
	var out []rawRecord
	for {
		rr, err := readRaw(r)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("reading records back: %v", err)
		}
		out = append(out, rr)
	}
}
