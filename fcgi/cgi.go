package fcgi

import "bytes"

// ResponseStatus reads the HTTP status of a CGI response (RFC 3875, 6.3)
// from the start of its STDOUT, the way nginx does: the code of a Status
// header; else 302 if there is a Location header; else 200. It looks only
// at the complete header lines within b, the application's first STDOUT
// record: php-fpm sends its headers together at the start of the first
// one. It does not allocate.
func ResponseStatus(b []byte) int {
	location := false
	for {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			break // an incomplete line: the rest is in a later record
		}
		line := b[:i]
		b = b[i+1:]
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) == 0 {
			break // the end of the headers
		}
		if v, ok := cutHeader(line, "status"); ok {
			if code, ok := statusCode(v); ok {
				return code
			}
			continue
		}
		if _, ok := cutHeader(line, "location"); ok {
			location = true
		}
	}
	if location {
		return 302
	}
	return 200
}

// cutHeader returns the value of a header line if its name is name, which
// must be lower case; names compare without regard to case.
func cutHeader(line []byte, name string) ([]byte, bool) {
	if len(line) <= len(name) || line[len(name)] != ':' {
		return nil, false
	}
	for i := 0; i < len(name); i++ {
		c := line[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != name[i] {
			return nil, false
		}
	}
	return line[len(name)+1:], true
}

// statusCode parses the three digits that start a Status value ("404 Not
// Found", " 404"), after optional blanks.
func statusCode(v []byte) (int, bool) {
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	if len(v) < 3 || (len(v) > 3 && v[3] != ' ' && v[3] != '\t') {
		return 0, false
	}
	code := 0
	for _, c := range v[:3] {
		if c < '0' || c > '9' {
			return 0, false
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 {
		return 0, false
	}
	return code, true
}

// CutHeaders splits a whole CGI response into its header block and its
// body, at the first blank line (CRLF or bare LF line ends, as PHP may send
// either). ok is false when no blank line ends the headers.
func CutHeaders(b []byte) (head, body []byte, ok bool) {
	if head, body, ok = bytes.Cut(b, []byte("\r\n\r\n")); ok {
		return head, body, true
	}
	return bytes.Cut(b, []byte("\n\n"))
}
