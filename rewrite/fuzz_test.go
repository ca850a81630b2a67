package rewrite

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fcgi"
)

// decodeParams reads params in the golden format: NAME=value lines with
// escaped values. A line without '=' is a name with an empty value.
func decodeParams(s string) []fcgi.Pair {
	var ps []fcgi.Pair
	for line := range strings.SplitSeq(s, "\n") {
		if line == "" {
			continue
		}
		name, val, _ := strings.Cut(line, "=")
		ps = append(ps, fcgi.Pair{Name: name, Value: unescape(val)})
	}
	return ps
}

func encodeParams(ps []fcgi.Pair) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString(p.Name)
		b.WriteByte('=')
		b.WriteString(escaper.Replace(p.Value))
		b.WriteByte('\n')
	}
	return b.String()
}

// FuzzRewrite checks that Rewrite never panics and that what it sends is
// what php-fpm must get: each name once, HTTP_PROXY gone unless kept,
// ordinary params with their last value, every pinned INI entry readable
// and written exactly as formatEntry writes its value, at most one entry
// per pinned key, and no verbatim entry lost or changed.
func FuzzRewrite(f *testing.F) {
	for _, file := range goldenFiles(f) {
		text, err := os.ReadFile(file)
		require.NoError(f, err)
		c := parseGolden(f, string(text))
		f.Add(encodeParams(c.in), c.from, c.to, c.cfg.SearchReplacePattern, c.cfg.IncludePath, c.cfg.KeepHTTPProxy)
	}
	f.Fuzz(func(t *testing.T, params, from, to, pattern, base string, keep bool) {
		checkRoundTrip(t, pattern)
		checkRoundTrip(t, base)

		in := decodeParams(params)
		orig := slices.Clone(in)
		cfg := Config{SearchReplacePattern: pattern, IncludePath: base, KeepHTTPProxy: keep}
		prefix := []fcgi.Pair{{Name: "PREFIX", Value: "kept"}}
		out, err := cfg.Rewrite(prefix, in, from, to)
		require.Equal(t, orig, in, "in modified")
		checkFits(t, in, out, err)

		// Prepared, the Config pins the same, with and without defaults,
		// which Prepare writes in advance when no pattern can occur in them.
		checkPrepared(t, &cfg, in, from, to)
		withDefaults := cfg
		withDefaults.Defaults = []Setting{{Key: "open_basedir", Value: base}, {Key: "auto_append_file"}, {Key: "open_basedir", Value: "/x"}}
		checkPrepared(t, &withDefaults, in, from, to)

		// A long resolved docroot makes every pinned value grow, until
		// some no longer fit one record: refused, never cut.
		long := strings.TrimRight(to, "/") + strings.Repeat("/release", 1500)
		outLong, errLong := cfg.Rewrite(nil, in, from, long)
		checkFits(t, in, outLong, errLong)

		// In place, with dst = in[:0], the result is the same.
		inPlace := slices.Clone(in)
		got, gotErr := cfg.Rewrite(inPlace[:0], inPlace, from, to)
		if err != nil {
			require.Equal(t, formatResult(nil, err), formatResult(got, gotErr), "in place")
		} else {
			require.Equal(t, formatResult(out[1:], nil), formatResult(got, gotErr), "in place")
		}
		if err != nil {
			require.True(t, errors.Is(err, ErrDocroot) || errors.Is(err, ErrUnsafePath) || errors.Is(err, ErrINIValue) || errors.Is(err, ErrTooLarge) || errors.Is(err, ErrPattern),
				"error %q wraps none of the package's errors", err)
			require.Equal(t, prefix, out, "dst changed on error")
			return
		}
		require.Equal(t, prefix[0], out[0], "dst prefix changed")
		out = out[1:]

		toRoot, ok := cleanRoot(to)
		require.True(t, ok, "to %q accepted", to)
		if toRoot == "" {
			toRoot = "/"
		}
		sent := map[string]string{}
		for _, p := range out {
			_, dup := sent[p.Name]
			require.False(t, dup, "%s sent twice", p.Name)
			sent[p.Name] = p.Value
		}
		last := map[string]string{}
		for _, p := range in {
			last[p.Name] = p.Value
		}
		for name, v := range last {
			got, ok := sent[name]
			switch name {
			case "HTTP_PROXY":
				require.Equal(t, keep, ok, "HTTP_PROXY sent: %v", ok)
			case "DOCUMENT_ROOT":
				require.Equal(t, toRoot, got)
			case "SCRIPT_FILENAME", "PATH_TRANSLATED", "PHP_VALUE", "PHP_ADMIN_VALUE":
				require.True(t, ok, "%s not sent", name)
			default:
				require.True(t, ok, "%s not sent", name)
				require.Equal(t, v, got, "%s has not its last value", name)
			}
		}
		for name := range sent {
			_, ok := last[name]
			require.True(t, ok || name == "PHP_VALUE" && base != "", "%s sent but not received", name)
		}
		for _, name := range []string{"PHP_VALUE", "PHP_ADMIN_VALUE"} {
			if v, ok := sent[name]; ok {
				checkINI(t, name, v, in)
			}
		}
	})
}

// checkPrepared checks that cfg prepared pins in as cfg does.
func checkPrepared(t *testing.T, cfg *Config, in []fcgi.Pair, from, to string) {
	t.Helper()
	want, wantErr := cfg.Rewrite(nil, in, from, to)
	got, gotErr := cfg.Prepare().Rewrite(nil, in, from, to)
	require.Equal(t, formatResult(want, wantErr), formatResult(got, gotErr), "prepared")
}

// checkFits checks the limit property: every pair Rewrite sends fits one
// FastCGI record, unless the web server sent it that large (the proxy
// refuses those when it writes them), or Rewrite refused the request with
// ErrTooLarge, which wraps fcgi.ErrParamTooLarge.
func checkFits(t *testing.T, in, out []fcgi.Pair, err error) {
	t.Helper()
	if err != nil {
		if errors.Is(err, ErrTooLarge) {
			require.ErrorIs(t, err, fcgi.ErrParamTooLarge)
		}
		return
	}
	for _, p := range out {
		if fcgi.PairSize(p) > fcgi.MaxContent {
			require.Contains(t, in, p, "%s of %d bytes created by Rewrite", p.Name, fcgi.PairSize(p))
		}
	}
}

// FuzzINI checks the INI reader and writer on their own: every entry of
// arbitrary PHP_VALUE text that parseValue reads is written back by
// formatEntry as one entry that reads back to the same literal, whatever
// entries surround it; and parse(write(x)) == x for the text as a value.
func FuzzINI(f *testing.F) {
	// Seeds: testdata/fuzz/FuzzINI.
	f.Fuzz(func(t *testing.T, text string) {
		checkRoundTrip(t, text)
		checkScanEntry(t, text)
		var written []string
		for _, e := range entryList(text) {
			key, raw, ok := splitEntry(e)
			if !ok {
				continue
			}
			v, ok := parseValue(raw)
			if !ok {
				continue
			}
			require.True(t, validValue(v), "parseValue(%q) = %q fails validValue", raw, v)
			if key == "" || strings.ContainsAny(key, "\r\n;=\"'[") {
				continue // not a key formatEntry is ever given
			}
			w, ok := formatEntry(key, v)
			require.True(t, ok, "formatEntry(%q, %q)", key, v)
			written = append(written, w)
		}
		// Written one per line, as Rewrite sends them: each reads back
		// alone, to its key and literal.
		got := entryList(strings.Join(written, "\n"))
		require.Equal(t, written, got, "written entries split differently")
		for _, w := range got {
			key, raw, ok := splitEntry(w)
			require.True(t, ok, "%q", w)
			v, ok := parseValue(raw)
			require.True(t, ok, "written entry %q does not parse", w)
			again, ok := formatEntry(key, v)
			require.True(t, ok)
			require.Equal(t, w, again, "write(parse(write(x))) != write(x)")
		}
	})
}

// checkScanEntry checks that scanEntry splits text as nextEntry does and
// that the '=' it finds splits each entry as splitEntry does.
func checkScanEntry(t *testing.T, text string) {
	t.Helper()
	for i := 0; ; {
		e, next, open, bad := nextEntry(text, i)
		e2, next2, eq, open2, bad2 := scanEntry(text, i)
		require.Equal(t, []any{e, next, open, bad}, []any{e2, next2, open2, bad2})
		if e == "" {
			return
		}
		key, raw, ok := splitEntry(e)
		key2, raw2, ok2 := splitAt(e, eq)
		require.Equal(t, []any{key, raw, ok}, []any{key2, raw2, ok2}, "entry %q, '=' at %d", e, eq)
		i = next
	}
}

// checkINI checks a PHP_VALUE or PHP_ADMIN_VALUE Rewrite sent against the
// ones it received.
func checkINI(t *testing.T, name, sent string, in []fcgi.Pair) {
	// The last occurrence first, then the earlier ones, each without the
	// keys a later one sets (extension entries all stay).
	var wantVerbatim []string
	later := map[string]bool{}
	for i := len(in) - 1; i >= 0; i-- {
		if in[i].Name != name {
			continue
		}
		var keys []string
		for _, e := range entryList(in[i].Value) {
			key, _, ok := splitEntry(e)
			if ok {
				keys = append(keys, key)
			}
			if ok && (slices.Contains(DefaultPinINI, key) || later[key] && key != "extension" && key != "zend_extension") {
				continue
			}
			wantVerbatim = append(wantVerbatim, e)
		}
		for _, k := range keys {
			later[k] = true
		}
	}
	var verbatim, pinned []string
	for _, e := range entryList(sent) {
		key, raw, ok := splitEntry(e)
		if !ok || !slices.Contains(DefaultPinINI, key) {
			verbatim = append(verbatim, e)
			continue
		}
		require.NotContains(t, pinned, key, "%s: %s pinned twice", name, key)
		pinned = append(pinned, key)
		v, ok := parseValue(raw)
		require.True(t, ok, "%s: pinned entry %q does not parse", name, e)
		w, ok := formatEntry(key, v)
		require.True(t, ok, "%s: value %q of %q cannot be written", name, v, e)
		require.Equal(t, e, w, "%s: entry not written as formatEntry writes it", name)
	}
	require.Equal(t, wantVerbatim, verbatim, "%s: verbatim entries lost or changed", name)
}

// checkRoundTrip checks validValue against its plain reference,
// parse(write(x)) == x, and that whatever parseValue reads can be written.
func checkRoundTrip(t *testing.T, x string) {
	require.Equal(t, validReference(x), validValue(x), "validValue(%q)", x)
	if e, ok := formatEntry("include_path", x); ok {
		require.Equal(t, []string{e}, entryList(e), "entry %q split", e)
		key, raw, ok := splitEntry(e)
		require.True(t, ok)
		require.Equal(t, "include_path", key)
		v, ok := parseValue(raw)
		require.True(t, ok, "written entry %q does not parse", e)
		require.Equal(t, x, v, "parse(write(%q))", x)
	}
	if v, ok := parseValue(x); ok {
		require.True(t, validValue(v), "parseValue(%q) = %q cannot be written", x, v)
	}
}
