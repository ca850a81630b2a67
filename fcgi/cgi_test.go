package fcgi

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestResponseStatus(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{
		{"", 200},
		{"Content-type: text/html\r\n\r\nbody", 200},
		{"Status: 404 Not Found\r\nContent-type: text/html\r\n\r\n", 404},
		{"X-Powered-By: PHP/8.2\r\nStatus: 503 Service Unavailable\r\n\r\n", 503},
		{"status:500\r\n\r\n", 500},
		{"STATUS: \t201 Created\n\n", 201},
		{"Status: 418\r\n\r\n", 418},
		{"Location: /login\r\n\r\n", 302},
		{"Location: /login\r\nStatus: 301 Moved Permanently\r\n\r\n", 301},
		{"Content-type: text/html\r\n\r\nStatus: 500 in the body\r\n", 200},
		{"Status: 40", 200},                         // the line goes on in the next record
		{"Status: 4040\r\n\r\n", 200},               // not a code
		{"Status: abc\r\n\r\n", 200},                // not a code
		{"Status: 099 Low\r\n\r\n", 200},            // below 100
		{"X-Status: 500\r\n\r\n", 200},              // another header
		{"Statuses: 500\r\n\r\n", 200},              // another header
		{"Status: 500\r\nStatus: 404\r\n\r\n", 500}, // the first wins, as in nginx
	} {
		assert.Equal(t, tc.want, ResponseStatus([]byte(tc.in)), "%q", tc.in)
	}
}

func TestResponseStatusAllocates(t *testing.T) {
	b := []byte("X-Powered-By: PHP/8.2.36\r\nContent-type: text/html; charset=UTF-8\r\nStatus: 404 Not Found\r\n\r\n<html>")
	allocs := testing.AllocsPerRun(100, func() { ResponseStatus(b) })
	assert.Zero(t, allocs)
}

func FuzzResponseStatus(f *testing.F) {
	f.Add([]byte("Status: 404 Not Found\r\n\r\n"))
	f.Add([]byte("Location: /x\r\n\r\n"))
	f.Add([]byte("Content-type: text/html\r\n\r\nbody"))
	f.Fuzz(func(t *testing.T, b []byte) {
		code := ResponseStatus(b)
		if code < 100 || code > 999 {
			t.Fatalf("ResponseStatus(%q) = %d; want a three-digit code", b, code)
		}
	})
}

func BenchmarkResponseStatus(b *testing.B) {
	out := []byte("X-Powered-By: PHP/8.2.36\r\nContent-type: text/html; charset=UTF-8\r\n\r\n<!doctype html><html>...")
	b.ReportAllocs()
	for b.Loop() {
		if ResponseStatus(out) != 200 {
			b.Fatal("status")
		}
	}
}

func TestCutHeaders(t *testing.T) {
	for _, tc := range []struct{ in, head, body string }{
		{"Status: 200\r\nX: y\r\n\r\npong", "Status: 200\r\nX: y", "pong"},
		{"Status: 200\nX: y\n\npong", "Status: 200\nX: y", "pong"},
		{"X: y\r\n\r\nbody\n\nmore", "X: y", "body\n\nmore"},
	} {
		head, body, ok := CutHeaders([]byte(tc.in))
		assert.True(t, ok, "%q", tc.in)
		assert.Equal(t, tc.head, string(head), "%q", tc.in)
		assert.Equal(t, tc.body, string(body), "%q", tc.in)
	}
	_, _, ok := CutHeaders([]byte("X: y\r\nno end"))
	assert.False(t, ok)
}
