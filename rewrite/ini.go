package rewrite

import (
	"iter"
	"strings"
)

// This file reads and writes the INI text php-fpm finds in PHP_VALUE and
// PHP_ADMIN_VALUE. It follows PHP's INI scanner (Zend/zend_ini_scanner.l,
// ZEND_INI_SCANNER_NORMAL, the mode php-fpm uses) only as far as pinning
// needs: where an entry starts and ends, its key, and the literal value of
// the keys we rewrite. Values it cannot read exactly as PHP would are
// refused rather than guessed, because a wrong guess would forward an
// unpinned path.

// Byte classes of PHP's INI scanner, looked up in a table: the scanning
// loops run on every request and a table beats a switch per byte.
const (
	cBreak     = 1 << iota // '\r', '\n': end a line outside quotes
	cComment               // ';'
	cEquals                // '='
	cDQuote                // '"'
	cSQuote                // '\''
	cBackslash             // '\\': an escape inside double quotes
	cDollar                // '$': may open ${...}
	cNUL                   // 0: ends the param for php-fpm
	cOperator              // & | ^ ~ ! ( ): an expression outside quotes
	cTab                   // '\t': ends a key
)

var class = [256]uint16{
	'\r': cBreak, '\n': cBreak, ';': cComment, '=': cEquals,
	'"': cDQuote, '\'': cSQuote, '\\': cBackslash, '$': cDollar, 0: cNUL,
	'&': cOperator, '|': cOperator, '^': cOperator, '~': cOperator,
	'!': cOperator, '(': cOperator, ')': cOperator, '\t': cTab,
}

// nextEntry returns the next logical INI entry of s at or after i, without
// its line break, and the index to continue from. entry is "" when s is
// exhausted. open reports an entry whose quoted string is never closed: it
// runs to the end of s; bad reports a section whose end cannot be found
// exactly (a quote or '$' in it), which the caller must refuse.
//
// Entries end where PHP's INI scanner (Zend/zend_ini_scanner.l, the NORMAL
// mode php-fpm uses) ends a statement, which is not always a line break:
//
//   - PHP ends a line at "\r", "\n" or "\r\n", but not inside a quoted
//     value: a double- or single-quoted string may span lines. Splitting on
//     bytes alone would let a line inside an unpinned string look like a
//     pinned key.
//   - A [section] ends at its ']'. A statement may follow on the same line:
//     "[x]include_path=/a" sets include_path (php-fpm logs "only classic
//     entries are allowed" for the section and applies the entry).
//   - A key ends at a tab: "x\tinclude_path=/a" is the bare word x (which
//     php-fpm ignores) and then include_path=/a. Spaces do not end it:
//     "x include_path=/a" is the key "x include_path". A tab followed by
//     blanks and '=' is only blank space before the '='.
//
// Blank lines are skipped. A comment ends at the line break.
func nextEntry(s string, i int) (entry string, next int, open, bad bool) {
	entry, next, _, open, bad = scanEntry(s, i)
	return entry, next, open, bad
}

// scanEntry is nextEntry, and also returns the index in entry of the '='
// that ends its key, or -1 if the key did not end at one (see splitEntry).
func scanEntry(s string, i int) (entry string, next, eq int, open, bad bool) {
	start := i
	for {
		if i == len(s) {
			return "", i, -1, false, false
		}
		switch s[i] {
		case ' ', '\t':
			i++
			continue
		case '\r', '\n':
			i++
			start = i
			continue
		}
		break
	}
	switch s[i] {
	case ';':
		e := lineEnd(s, i)
		return s[start:e], e, -1, false, false
	case '[':
		entry, next, open, bad = section(s, start, i)
		return entry, next, -1, open, bad
	}
	// The key: PHP's option names cannot hold a line break, ';' or a tab.
	for ; i < len(s); i++ {
		c := class[s[i]]
		if c&(cBreak|cComment|cEquals|cTab) == 0 {
			continue
		}
		if c&cBreak != 0 {
			return s[start:i], i, -1, false, false
		}
		if c&cComment != 0 {
			e := lineEnd(s, i)
			return s[start:e], e, -1, false, false
		}
		if c&cTab != 0 {
			j := i + 1
			for j < len(s) && (s[j] == ' ' || s[j] == '\t') {
				j++
			}
			if j < len(s) && s[j] == '=' {
				i = j - 1 // blanks before the '=': the loop stops there
				continue
			}
			return s[start:i], j, -1, false, false
		}
		break
	}
	// The value: quotes hide line breaks and ';' from the scanner.
	eq = -1
	if i < len(s) {
		eq = i - start // the key loop stopped at the '='
	}
	for i < len(s) {
		c := class[s[i]]
		switch {
		case c&(cBreak|cComment|cDQuote|cSQuote) == 0:
			i++
		case c&cBreak != 0:
			return s[start:i], i, eq, false, false
		case c&cComment != 0:
			e := lineEnd(s, i)
			return s[start:e], e, eq, false, false
		case c&cDQuote != 0:
			i = skipDoubleQuoted(s, i+1)
		default:
			i = skipSingleQuoted(s, i+1)
		}
		if i < 0 {
			return s[start:], len(s), eq, true, false
		}
	}
	return s[start:], len(s), eq, false, false
}

// entries yields the entries of the INI string s, split as nextEntry splits
// them, for the passes that need only the entries: the unterminated quotes
// and quoted section names nextEntry flags are refused by iniPlan.scan.
func entries(s string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for i := 0; ; {
			e, next, _, _ := nextEntry(s, i)
			if e == "" || !yield(e) {
				return
			}
			i = next
		}
	}
}

// section returns the section entry whose '[' is at s[i] (start is where
// its blanks began): up to its ']', or to the line break if there is none
// (PHP's parser stops there). What follows the ']' on the line is the next
// entry. A quote or '$' in the name makes the end uncertain (quoted names
// may hold ']'): bad is set.
func section(s string, start, i int) (entry string, next int, open, bad bool) {
	e := lineEnd(s, i)
	k := strings.IndexByte(s[i:e], ']')
	if k < 0 {
		return s[start:e], e, false, false
	}
	end := i + k + 1
	if strings.ContainsAny(s[i:end], "\"'$") {
		return s[start:e], e, false, true
	}
	return s[start:end], end, false, false
}

// lineEnd returns the index of the first line break in s at or after i, or
// len(s).
func lineEnd(s string, i int) int {
	for ; i < len(s); i++ {
		if s[i] == '\r' || s[i] == '\n' {
			return i
		}
	}
	return i
}

// skipDoubleQuoted returns the index after the '"' that closes the string
// whose contents start at i, or -1 if it is never closed. A backslash
// escapes the next byte, except that `\"` right before a line break (or the
// end) closes the string: PHP keeps Windows paths such as "C:\dir\" working
// that way.
func skipDoubleQuoted(s string, i int) int {
	k := strings.IndexByte(s[i:], '"')
	if k < 0 {
		return -1
	}
	if strings.IndexByte(s[i:i+k], '\\') < 0 {
		return i + k + 1
	}
	for i < len(s) {
		switch s[i] {
		case '"':
			return i + 1
		case '\\':
			if i+1 < len(s) {
				if s[i+1] == '"' && (i+2 == len(s) || s[i+2] == '\n' || s[i+2] == '\r') {
					return i + 2
				}
				i += 2
				continue
			}
		}
		i++
	}
	return -1
}

// skipSingleQuoted returns the index after the single quote that closes the
// raw string whose contents start at i, or -1 if it is never closed.
func skipSingleQuoted(s string, i int) int {
	k := strings.IndexByte(s[i:], '\'')
	if k < 0 {
		return -1
	}
	return i + k + 1
}

// splitEntry splits an entry into its key, with the spaces and tabs PHP
// ignores trimmed, and the raw text after the first '='. ok is false for
// an entry without '=' (a comment, a section, a bare word).
func splitEntry(entry string) (key, raw string, ok bool) {
	eq := strings.IndexByte(entry, '=')
	if eq < 0 {
		return "", "", false
	}
	return trimSpaceTab(entry[:eq]), entry[eq+1:], true
}

// splitAt is splitEntry for an entry whose first '=' scanEntry found at
// eq, or did not look for (eq -1).
func splitAt(entry string, eq int) (key, raw string, ok bool) {
	if eq < 0 {
		return splitEntry(entry)
	}
	return trimSpaceTab(entry[:eq]), entry[eq+1:], true
}

// parseValue returns the literal string PHP assigns for the raw text after
// '=' in an entry. ok is false when PHP would read the text as something
// other than a literal, or when the literal fails [validValue] and could
// not be written back unchanged; a value parseValue returns therefore
// always passes validValue.
//
//   - "double-quoted": no backslash escapes, no ${...} expansion, closed on
//     the same line;
//   - 'single-quoted': PHP's raw string, not empty (PHP rejects two quotes
//     in a row);
//   - unquoted: up to a ';' comment, surrounding spaces and tabs trimmed;
//     no quotes, no '=' and none of the expression operators & | ^ ~ ! ( ),
//     no ${...}, no '$' at the end. The words PHP reads as booleans become
//     "1" (true, on, yes) or "" (false, off, no, none, null), in any case.
//
// After a closing quote only spaces, tabs and a ';' comment may follow:
// PHP would concatenate anything else.
func parseValue(raw string) (value string, ok bool) {
	s := trimLeftSpaceTab(raw)
	if s == "" {
		return "", true
	}
	switch s[0] {
	case '"', '\'':
		k := strings.IndexByte(s[1:], s[0])
		if k < 0 || k == 0 && s[0] == '\'' {
			return "", false
		}
		v := s[1 : 1+k]
		return v, validValue(v) && onlyComment(s[2+k:])
	}
	v := s
	if k := strings.IndexByte(v, ';'); k >= 0 {
		v = v[:k]
	}
	v = trimRightSpaceTab(v)
	const refused = cBreak | cEquals | cDQuote | cSQuote | cBackslash | cNUL | cOperator
	for i := 0; i < len(v); i++ {
		c := class[v[i]]
		if c&(refused|cDollar) == 0 {
			continue
		}
		// PHP takes '$' literally only when another byte follows that
		// does not open ${...}.
		if c&refused != 0 || i+1 == len(v) || v[i+1] == '{' {
			return "", false
		}
	}
	switch len(v) {
	case 2, 3, 4, 5:
		switch {
		case strings.EqualFold(v, "on"), strings.EqualFold(v, "yes"), strings.EqualFold(v, "true"):
			return "1", true
		case strings.EqualFold(v, "no"), strings.EqualFold(v, "off"), strings.EqualFold(v, "none"),
			strings.EqualFold(v, "null"), strings.EqualFold(v, "false"):
			return "", true
		}
	}
	return v, true
}

// onlyComment reports whether s is empty, blank, or a ';' comment after
// blanks.
func onlyComment(s string) bool {
	s = trimLeftSpaceTab(s)
	return s == "" || s[0] == ';'
}

// validValue reports whether v can be written as a double-quoted INI value
// that PHP reads back as exactly v: no '"' (it would close the string), no
// '\' (PHP unescapes \\, \" and \$), no line break and no NUL (php-fpm reads
// the param as a C string), and no "${" (PHP expands it).
func validValue(v string) bool {
	i := 0
	// Eight bytes at a time: a word without bytes below '%' or equal to
	// '\\' holds none of the refused bytes, which is the common case for
	// paths. The tests are the classic SWAR "has a byte less than" and
	// "has a zero byte" expressions.
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	for ; i+8 <= len(v); i += 8 {
		x := load64(v, i)
		y := x ^ ('\\' * lo)
		if ((x-'%'*lo)&^x|(y-lo)&^y)&hi != 0 {
			break
		}
	}
	for ; i < len(v); i++ {
		c := class[v[i]]
		if c&(cDQuote|cBackslash|cBreak|cNUL|cDollar) == 0 {
			continue
		}
		if c&cDollar == 0 || i+1 < len(v) && v[i+1] == '{' {
			return false
		}
	}
	return true
}

// formatEntry returns the entry key="value", and ok false when value fails
// [validValue]. Pinned values are always quoted: PHP reads an unquoted
// value as constants and operators, and paths must be quoted.
func formatEntry(key, value string) (entry string, ok bool) {
	if !validValue(value) {
		return "", false
	}
	return key + `="` + value + `"`, true
}

func trimSpaceTab(s string) string {
	return trimRightSpaceTab(trimLeftSpaceTab(s))
}

func trimLeftSpaceTab(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	return s
}

func trimRightSpaceTab(s string) string {
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}
