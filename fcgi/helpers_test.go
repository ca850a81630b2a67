package fcgi

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"
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

// checkGoroutines fails the test if, at its end, more goroutines run than at
// its start, once they have had a few seconds to finish. Call it first, so
// its clean-up runs after every other one. Tests that use it must not run in
// parallel.
func checkGoroutines(t *testing.T) {
	t.Helper()
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > base {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutines: got %d; want at most %d\n%s", runtime.NumGoroutine(), base, buf)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

// logBuf collects log output from several goroutines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// eventually polls cond until it holds or d passes.
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
	return true
}
