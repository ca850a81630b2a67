package testenv

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// CGIResponse is a FastCGI responder's answer as cgi-fcgi prints it: CGI
// headers, a blank line, the body.
type CGIResponse struct {
	// Status is from the Status header, or 200 without one (RFC 3875, 6.3.3).
	Status int
	Header http.Header
	Body   []byte
	// ExitCode is cgi-fcgi's: the application's exit status from
	// END_REQUEST, or non-zero when cgi-fcgi itself failed.
	ExitCode int
	// Stderr is what cgi-fcgi wrote to its standard error: the
	// application's STDERR stream and cgi-fcgi's own complaints.
	Stderr string
}

// CGIFCGI runs libfcgi's command-line FastCGI client, cgi-fcgi (Debian
// package libfcgi-bin), the usual health check of php-fpm.
type CGIFCGI struct {
	// Bin is the cgi-fcgi binary.
	Bin string
	// Addr is where it connects: "host:port" or "unix:/path".
	Addr string
}

// NewCGIFCGI finds cgi-fcgi with RequireBinary and returns a client of addr.
func NewCGIFCGI(t testing.TB, addr string) *CGIFCGI {
	t.Helper()
	return &CGIFCGI{Bin: RequireBinary(t, "cgi-fcgi"), Addr: addr}
}

// Do runs "cgi-fcgi -bind -connect" with params as its whole environment,
// which cgi-fcgi sends as the request's params, and body on its standard
// input (set CONTENT_LENGTH to match), and parses what it prints. It is
// safe to call from any goroutine.
func (c *CGIFCGI) Do(params []string, body []byte) (CGIResponse, error) {
	_, address := splitAddr(c.Addr) // cgi-fcgi takes a socket path as it is
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Bin, "-bind", "-connect", address)
	cmd.Env = params
	cmd.Stdin = bytes.NewReader(body)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		return CGIResponse{}, fmt.Errorf("testenv: cgi-fcgi: %w", err)
	}
	r, err := parseCGI(stdout.Bytes())
	r.Stderr = stderr.String()
	if exit != nil {
		r.ExitCode = exit.ExitCode()
	}
	if err != nil {
		return r, fmt.Errorf("testenv: cgi-fcgi -connect %s: %w (exit code %d)\nstdout: %q\nstderr: %s", address, err, r.ExitCode, stdout.Bytes(), r.Stderr)
	}
	return r, nil
}

// Run is Do that fails the test on error.
func (c *CGIFCGI) Run(t testing.TB, params []string, body []byte) CGIResponse {
	t.Helper()
	r, err := c.Do(params, body)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// parseCGI splits a CGI response into status, headers and body.
func parseCGI(out []byte) (CGIResponse, error) {
	r := CGIResponse{Status: 200}
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(out)))
	h, err := tp.ReadMIMEHeader()
	if err != nil {
		return r, fmt.Errorf("no CGI headers: %w", err)
	}
	r.Header = http.Header(h)
	if s := r.Header.Get("Status"); s != "" {
		code, _, _ := strings.Cut(s, " ")
		if r.Status, err = strconv.Atoi(code); err != nil {
			return r, fmt.Errorf("bad Status header %q", s)
		}
	}
	r.Body, err = io.ReadAll(tp.R)
	if err != nil {
		return r, err
	}
	return r, nil
}
