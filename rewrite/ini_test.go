package rewrite

import (
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// entryList is what entries yields for s.
func entryList(s string) []string { return slices.Collect(entries(s)) }

func TestNextEntry(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"\n\r\n  \t\n", nil},
		{"a=1", []string{"a=1"}},
		{"a=1\nb=2", []string{"a=1", "b=2"}},
		{"a=1\rb=2\r\nc=3\n", []string{"a=1", "b=2", "c=3"}},
		{"  a = 1  \n", []string{"  a = 1  "}},
		{"; c=\"x\n[s]\"y\nb=2", []string{"; c=\"x", "[s]", "\"y", "b=2"}},
		{"bare\na=1", []string{"bare", "a=1"}},
		{"a;b=\"x\nc=1", []string{"a;b=\"x", "c=1"}},
		// Quotes hide line breaks and ';'.
		{"a=\"x\ny\"\nb=2", []string{"a=\"x\ny\"", "b=2"}},
		{"a='x\r\ny;'\nb=2", []string{"a='x\r\ny;'", "b=2"}},
		{"a=\"x;y\" ; c\"\nb=2", []string{"a=\"x;y\" ; c\"", "b=2"}},
		// Escapes inside double quotes.
		{"a=\"x\\\"y\nz\"\nb=2", []string{"a=\"x\\\"y\nz\"", "b=2"}},
		{"a=\"C:\\dir\\\"\nb=2", []string{"a=\"C:\\dir\\\"", "b=2"}},
		// An unclosed quote runs to the end.
		{"a=\"x\nb=2", []string{"a=\"x\nb=2"}},
		{"a='x\nb=2", []string{"a='x\nb=2"}},
		{"a=b=c\n", []string{"a=b=c"}},
		// A section ends at its ']'; a statement may follow on its line.
		{"[x]include_path=/a\nb=1", []string{"[x]", "include_path=/a", "b=1"}},
		{"[x] \t y=1 ; c\n", []string{"[x]", " \t y=1 ; c"}},
		{"[x];c\nb=1", []string{"[x]", ";c", "b=1"}},
		{"[x\nb=1", []string{"[x", "b=1"}},
		// A tab ends a key, unless only blanks and '=' follow it.
		{"x\tinclude_path=/a", []string{"x", "include_path=/a"}},
		{"a b\t c=1\n", []string{"a b", "c=1"}},
		{"x \t =1\n", []string{"x \t =1"}},
		{"x\t\n", []string{"x"}},
		{"x include_path=/a", []string{"x include_path=/a"}},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, entryList(tt.in), "entryList(%q)", tt.in)
	}
}

func TestNextEntryOpen(t *testing.T) {
	for s, want := range map[string]bool{
		"a=\"x\nb=2":      true,
		"a='x\nb=2":       true,
		"a=\"x\\\"":       false, // "C:\dir\" closes at the end
		"a=\"x\\\"y":      true,
		"a=\"x\"\nb='y'":  false,
		"; a=\"x":         false,
		"[a=\"x":          false,
		"a;b=\"x":         false,
		"a=x ; \"y":       false,
		"a=\"x;y\" ; \"z": false,
	} {
		var open bool
		for i := 0; ; {
			e, next, o, _ := nextEntry(s, i)
			if e == "" {
				break
			}
			open = open || o
			i = next
		}
		assert.Equal(t, want, open, "nextEntry(%q) open", s)
	}
}

func TestSplitEntry(t *testing.T) {
	key, raw, ok := splitEntry(" \tinclude_path \t= \".:/x\" ; c")
	require.True(t, ok)
	assert.Equal(t, "include_path", key)
	assert.Equal(t, " \".:/x\" ; c", raw)

	_, _, ok = splitEntry("; comment")
	assert.False(t, ok)
	key, _, ok = splitEntry("a=b=c")
	require.True(t, ok)
	assert.Equal(t, "a", key)
}

func TestParseValue(t *testing.T) {
	tests := []struct {
		raw  string
		want string
		ok   bool
	}{
		{"", "", true},
		{"  \t", "", true},
		{".:/usr/share/php", ".:/usr/share/php", true},
		{"  /a b/c  ; comment \"x", "/a b/c", true},
		{"/a;b", "/a", true},
		{`".:/x"`, ".:/x", true},
		{` " /x " `, " /x ", true},
		{`".:/x" ; comment`, ".:/x", true},
		{`""`, "", true},
		{`"a;b'c$d"`, "a;b'c$d", true},
		{`'/x'`, "/x", true},
		{`  '/x;y'  ;c`, "/x;y", true},
		{"On", "1", true},
		{"yes", "1", true},
		{"TRUE  ", "1", true},
		{"none", "", true},
		{"Off", "", true},
		{"NULL", "", true},
		{"nonesuch", "nonesuch", true},
		{"/a$b", "/a$b", true},

		// Double quotes: escapes, expansion, lines, what follows.
		{`"/x\\y"`, "", false},
		{`"/x\"y"`, "", false},
		{`"${HOME}/x"`, "", false},
		{"\"/x\ny\"", "", false},
		{`"/x`, "", false},
		{`"/x"/y`, "", false},
		{`"/x" "y"`, "", false},
		// Single quotes.
		{`''`, "", false},
		{`'/x`, "", false},
		{`'/x'y`, "", false},
		{`'a"b'`, "", false},
		{`'a\b'`, "", false},
		{`'${x}'`, "", false},
		{"'a\nb'", "", false},
		// Unquoted: quotes, operators, expansion.
		{`/x"y"`, "", false},
		{`/x'y'`, "", false},
		{"E_ALL & ~E_NOTICE", "", false},
		{"a|b", "", false},
		{"(a)", "", false},
		{"!a", "", false},
		{"a^b", "", false},
		{"a=b", "", false},
		{"${x}/y", "", false},
		{"/x$", "", false},
		{"/x\x00", "", false},
	}
	for _, tt := range tests {
		got, ok := parseValue(tt.raw)
		assert.Equal(t, tt.ok, ok, "parseValue(%q) ok", tt.raw)
		if tt.ok {
			assert.Equal(t, tt.want, got, "parseValue(%q)", tt.raw)
		}
	}
}

func TestFormatEntry(t *testing.T) {
	for _, v := range []string{"", ".:/usr/share/php", " /a b ", "a;b'c$d", "/x$", "ä/ü"} {
		e, ok := formatEntry("include_path", v)
		require.True(t, ok, "formatEntry(%q)", v)
		assert.Equal(t, `include_path="`+v+`"`, e)
		key, raw, ok := splitEntry(e)
		require.True(t, ok)
		assert.Equal(t, "include_path", key)
		got, ok := parseValue(raw)
		require.True(t, ok, "parseValue(%q)", raw)
		assert.Equal(t, v, got)
		assert.Equal(t, []string{e}, entryList(e))
	}
	for _, v := range []string{`a"b`, `a\b`, "a\nb", "a\rb", "a\x00b", "${x}", "a${"} {
		_, ok := formatEntry("include_path", v)
		assert.False(t, ok, "formatEntry(%q)", v)
	}
}

// validReference is validValue one byte at a time, without the word-wise
// fast path.
func validReference(v string) bool {
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '"', '\\', '\r', '\n', 0:
			return false
		case '$':
			if i+1 < len(v) && v[i+1] == '{' {
				return false
			}
		}
	}
	return true
}

func TestValidValueWordwise(t *testing.T) {
	bytes := []byte{'"', '\\', '\r', '\n', 0, '$', '{', ' ', '!', '#', '%', '/', 0x7f, 0x80, 0xff, 0x5b, 0x5d, 0xdc}
	for n := 1; n <= 24; n++ {
		for pos := range n {
			for _, c := range bytes {
				for _, d := range []byte{'a', '{'} {
					b := []byte(strings.Repeat("a", n))
					b[pos] = c
					if pos+1 < n {
						b[pos+1] = d
					}
					v := string(b)
					assert.Equal(t, validReference(v), validValue(v), "validValue(%q)", v)
				}
			}
		}
	}
}
