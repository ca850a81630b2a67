package rewrite

// Golden-file tests: one case per file ../testdata/rewrite/*.txt.
//
// A case file has a header, the input params, a separator line and the
// expected result:
//
//	# Lines starting with '#' in the header are comments.
//	from: /var/www/site/htdocs
//	to: /var/www/site/releases/A/htdocs
//	pattern: /var/www/site/htdocs
//	include_path: .:/usr/share/php
//	pin: include_path, open_basedir
//	keep_http_proxy: true
//
//	DOCUMENT_ROOT=/var/www/site/htdocs
//	PHP_VALUE=include_path=".:/var/www/site/htdocs/lib"\nmemory_limit=256M
//	----
//	DOCUMENT_ROOT=/var/www/site/releases/A/htdocs
//	PHP_VALUE=include_path=".:/var/www/site/releases/A/htdocs/lib"\nmemory_limit=256M
//
// Header keys: from and to are the arguments of Rewrite (required);
// pattern, include_path and keep_http_proxy set the Config fields
// SearchReplacePattern, IncludePath and KeepHTTPProxy; each "default:
// key=value" line adds a Config.Defaults setting; pin sets PinINI as a
// comma-separated list ("pin:" with nothing after it is an empty list, no
// pin line leaves it nil). The header ends at the first empty line.
//
// Params are NAME=value, one per line, in order; the value runs from the
// first '=' to the end of the line. In values \n, \r, \t, \0 and \\ stand
// for a line feed, a carriage return, a tab, a NUL byte and a backslash.
// The expected part lists the output params in the same form, or is the
// single line "error: " followed by the error's text.
//
// go test ./rewrite -run TestGolden -update rewrites the expected part of
// every file from the current output.

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fcgi"
)

var update = flag.Bool("update", false, "rewrite the expected part of golden files")

const (
	goldenDir = "../testdata/rewrite"
	separator = "----"
)

type goldenCase struct {
	cfg      Config
	from, to string
	in       []fcgi.Pair
	head     string // the file up to and including the separator line
	want     string // the expected part
}

func parseGolden(t testing.TB, text string) goldenCase {
	t.Helper()
	var c goldenCase
	lines := strings.SplitAfter(text, "\n")
	i := 0
	for ; i < len(lines); i++ {
		line := strings.TrimRight(lines[i], "\n")
		if line == "" {
			i++
			break
		}
		if strings.HasPrefix(line, "#") {
			continue
		}
		key, val, ok := strings.Cut(line, ":")
		require.True(t, ok, "header line %q has no ':'", line)
		val = strings.TrimSpace(val)
		switch key {
		case "from":
			c.from = val
		case "to":
			c.to = val
		case "pattern":
			c.cfg.SearchReplacePattern = val
		case "include_path":
			c.cfg.IncludePath = val
		case "pin":
			c.cfg.PinINI = []string{}
			for k := range strings.SplitSeq(val, ",") {
				if k = strings.TrimSpace(k); k != "" {
					c.cfg.PinINI = append(c.cfg.PinINI, k)
				}
			}
		case "default":
			k, v, ok := strings.Cut(val, "=")
			require.True(t, ok, "default %q has no '='", val)
			c.cfg.Defaults = append(c.cfg.Defaults, Setting{Key: k, Value: v})
		case "keep_http_proxy":
			c.cfg.KeepHTTPProxy = val == "true"
		default:
			t.Fatalf("unknown header key %q", key)
		}
	}
	require.NotEmpty(t, c.from, "header has no from")
	require.NotEmpty(t, c.to, "header has no to")
	for ; i < len(lines); i++ {
		line := strings.TrimRight(lines[i], "\n")
		if line == separator {
			c.head = strings.Join(lines[:i+1], "")
			c.want = strings.Join(lines[i+1:], "")
			return c
		}
		c.in = append(c.in, parseParam(t, line))
	}
	t.Fatalf("no %q line", separator)
	return c
}

func parseParam(t testing.TB, line string) fcgi.Pair {
	t.Helper()
	name, val, ok := strings.Cut(line, "=")
	require.True(t, ok, "param line %q has no '='", line)
	return fcgi.Pair{Name: name, Value: unescape(val)}
}

// unescape decodes the escapes of the golden format; an unknown escape is
// kept as it is.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		switch s[i] {
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case '0':
			b.WriteByte(0)
		case '\\':
			b.WriteByte('\\')
		default:
			b.WriteByte('\\')
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

var escaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, "\r", `\r`, "\t", `\t`, "\x00", `\0`)

// formatResult renders Rewrite's result as the expected part of a case.
func formatResult(out []fcgi.Pair, err error) string {
	if err != nil {
		return "error: " + err.Error() + "\n"
	}
	var b strings.Builder
	for _, p := range out {
		b.WriteString(p.Name)
		b.WriteByte('=')
		b.WriteString(escaper.Replace(p.Value))
		b.WriteByte('\n')
	}
	return b.String()
}

func goldenFiles(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(goldenDir, "*.txt"))
	require.NoError(t, err)
	require.NotEmpty(t, files, "no golden files in %s", goldenDir)
	return files
}

func TestGolden(t *testing.T) {
	for _, file := range goldenFiles(t) {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) {
			text, err := os.ReadFile(file)
			require.NoError(t, err)
			c := parseGolden(t, string(text))
			out, err := c.cfg.Rewrite(nil, c.in, c.from, c.to)
			if err != nil {
				assert.True(t, errors.Is(err, ErrDocroot) || errors.Is(err, ErrUnsafePath) || errors.Is(err, ErrINIValue) || errors.Is(err, ErrPattern),
					"error %q wraps none of the package's errors", err)
				assert.Nil(t, out, "dst changed on error")
			}
			got := formatResult(out, err)

			// In place, with dst = in[:0], the result is the same.
			inPlace := append(slices.Clone(c.in), make([]fcgi.Pair, 1)...)[:len(c.in)]
			out2, err2 := c.cfg.Rewrite(inPlace[:0], inPlace, c.from, c.to)
			assert.Equal(t, got, formatResult(out2, err2), "in place")

			// So it is with the Config prepared.
			out3, err3 := c.cfg.Prepare().Rewrite(nil, c.in, c.from, c.to)
			assert.Equal(t, got, formatResult(out3, err3), "prepared")

			if *update {
				require.NoError(t, os.WriteFile(file, []byte(c.head+got), 0o644))
				return
			}
			assert.Equal(t, c.want, got)
		})
	}
}
