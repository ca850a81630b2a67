package main

import (
	"encoding/json"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/internal/testenv"
	"github.com/incpathd/incpathd/internal/testsupport"
	"github.com/incpathd/incpathd/rewrite"
)

// iniReport asks testdata/site/info.php, through incpathd at addr, for the
// values of keys in the worker, with extra params sent along.
func iniReport(t *testing.T, addr, docroot string, keys []string, extra ...fcgi.Pair) (map[string]string, result) {
	t.Helper()
	params := baseParams(docroot, "ini="+strings.Join(keys, ","))
	params = withParam(params, "SCRIPT_FILENAME", docroot+"/info.php")
	params = withParam(params, "SCRIPT_NAME", "/info.php")
	params = append(params, extra...)
	res := dialFCGI(t, addr).roundTrip(false, params)
	require.NoError(t, res.err)
	if res.status != 200 {
		return nil, res
	}
	_, body, ok := strings.Cut(res.stdout, "\r\n\r\n")
	require.True(t, ok, "answer %q", res.stdout)
	var r struct{ INI map[string]any }
	require.NoError(t, json.Unmarshal([]byte(body), &r), "answer %q", res.stdout)
	out := map[string]string{}
	for k, v := range r.INI {
		s, _ := v.(string)
		out[k] = s
	}
	return out, res
}

// Item 1 of issue #10: php-fpm keeps PHP_VALUE and PHP_ADMIN_VALUE entries
// in the worker. With one worker, a request pinned to A that sets
// include_path and open_basedir, then a flip to B, then a request that sets
// neither: the second must run with the pool's own values, learned from
// php-fpm with no flag set, not with A's.
func TestE2EPinnedINIDoesNotLeak(t *testing.T) {
	site := testenv.NewSite(t, "A", "B")
	fpm := testenv.StartFPM(t, testenv.FPMOptions{
		Children: 1,
		INI:      map[string]string{"include_path": `".:/srv/pool/lib"`},
	})
	args := []string{
		"--listen", testenv.FreeAddr(t),
		"--upstream", fpm.Addr,
		"--search-replace-pattern", site.Current,
		"--max-conns", "1",
		"--pool-probe-dir", t.TempDir(),
	}
	addr, log, stop := startIncpathd(t, args...)
	keys := []string{"include_path", "open_basedir", "auto_prepend_file"}
	a := site.Releases["A"]
	got, res := iniReport(t, addr, site.Current, keys,
		fcgi.Pair{Name: "PHP_VALUE", Value: `include_path=".:` + site.Current + `/include"`},
		fcgi.Pair{Name: "PHP_ADMIN_VALUE", Value: `open_basedir="` + site.Current + `:/tmp"`})
	require.NotNil(t, got, "first request: %+v", res)
	assert.Equal(t, ".:"+a+"/include", got["include_path"])
	assert.Equal(t, a+":/tmp", got["open_basedir"])

	require.NoError(t, site.Flip("B"))
	got, res = iniReport(t, addr, site.Current, keys)
	require.NotNil(t, got, "second request (A's open_basedir still in force?): %+v", res)
	assert.Equal(t, ".:/srv/pool/lib", got["include_path"], "the pool's include_path")
	assert.Equal(t, "", got["open_basedir"], "the pool's open_basedir")
	assert.Equal(t, "", got["auto_prepend_file"])
	assert.Contains(t, log.String(), "learned the php-fpm pool's ini values")

	// A request pinned to B sets include_path; incpathd restarts; the
	// worker still holds B's path when the new process learns the pool's
	// values, and current now points at A: no request may get B's path.
	// The watch sees the flip a moment after the rename, not at once: on
	// a loaded machine a request sent right after it may still be pinned
	// to A, so this one is sent until it is pinned to B.
	b := site.Releases["B"]
	require.True(t, testsupport.Eventually(5*time.Second, func() bool {
		got, res = iniReport(t, addr, site.Current, keys,
			fcgi.Pair{Name: "PHP_VALUE", Value: `include_path=".:` + site.Current + `/include"`})
		require.NotNil(t, got, "%+v", res)
		return got["include_path"] == ".:"+b+"/include"
	}), "include_path %q, want B's", got["include_path"])
	stop()
	require.NoError(t, site.Flip("A"))
	addr, _, _ = startIncpathd(t, args...)
	got, res = iniReport(t, addr, site.Current, keys)
	require.NotNil(t, got, "after the restart: %+v", res)
	assert.False(t, throughLink(got["include_path"], b), "include_path %q names B", got["include_path"])
	assert.Equal(t, ".:"+a+"/include", got["include_path"], "the worker's value, pinned to A")
}

// --pin-default gives the value instead of the pool, pinned like a
// request's, with the probe off.
func TestE2EPinDefault(t *testing.T) {
	site := testenv.NewSite(t, "A", "B")
	fpm := testenv.StartFPM(t, testenv.FPMOptions{Children: 1})
	addr, _, _ := startIncpathd(t,
		"--listen", testenv.FreeAddr(t),
		"--upstream", fpm.Addr,
		"--search-replace-pattern", site.Current,
		"--max-conns", "1",
		"--pool-probe=false",
		"--pin-default", "open_basedir="+site.Current+":/tmp",
		"--pin-default", "include_path=.:"+site.Current+"/include",
	)
	keys := []string{"include_path", "open_basedir"}
	_, res := iniReport(t, addr, site.Current, keys,
		fcgi.Pair{Name: "PHP_VALUE", Value: `open_basedir="/nowhere"`})
	assert.NotEqual(t, 200, res.status, "the script is outside /nowhere")
	require.NoError(t, site.Flip("B"))
	// The watch sees the flip a moment after the rename, later on a loaded
	// machine: the request is sent until it is pinned to B, and then both
	// defaults must name B.
	b := site.Releases["B"]
	var got map[string]string
	require.True(t, testsupport.Eventually(5*time.Second, func() bool {
		got, res = iniReport(t, addr, site.Current, keys)
		require.NotNil(t, got, "%+v", res)
		return got["include_path"] == ".:"+b+"/include"
	}), "include_path %q, want B's", got["include_path"])
	assert.Equal(t, b+":/tmp", got["open_basedir"])
}

// Item 3 of issue #10, checked against php-fpm's own reading: PHP_VALUE
// strings built from the pieces PHP's INI scanner treats specially, and
// the FuzzINI corpus, are sent through incpathd to real php-fpm. Whatever
// PHP makes of them, the include_path and open_basedir it reports must
// never name the unresolved current link: each request is pinned whole,
// or refused with 400.
func TestE2EINIAsPHPFPMReadsIt(t *testing.T) {
	site := testenv.NewSite(t, "A")
	fpm := testenv.StartFPM(t, testenv.FPMOptions{Children: 1})
	addr, _, _ := startIncpathd(t,
		"--listen", testenv.FreeAddr(t),
		"--upstream", fpm.Addr,
		"--search-replace-pattern", site.Current,
		"--max-conns", "1",
		"--pool-probe-dir", t.TempDir(),
	)
	cur := site.Current
	values := iniCorpus(t, cur)
	keys := []string{"include_path", "open_basedir"}
	var pinned, refused, failed int
	for _, v := range values {
		got, res := iniReport(t, addr, cur, keys, fcgi.Pair{Name: "PHP_VALUE", Value: v})
		switch {
		case got != nil:
			pinned++
			for _, k := range keys {
				require.False(t, throughLink(got[k], cur), "PHP_VALUE %q: %s=%q unpinned", v, k, got[k])
			}
		case res.status == 400:
			refused++
		default:
			failed++ // PHP's own answer to a value it rejects (open_basedir elsewhere)
		}
	}
	t.Logf("%d PHP_VALUE strings: %d answered, %d refused with 400, %d failed in PHP", len(values), pinned, refused, failed)
	assert.Greater(t, pinned, len(values)/4, "most strings reach PHP")
}

// iniCorpus returns PHP_VALUE strings that set include_path or
// open_basedir through cur among the tokens PHP's scanner splits on, and
// the seeds of rewrite's FuzzINI, with cur substituted.
func iniCorpus(t *testing.T, cur string) []string {
	sets := []string{
		"include_path=" + cur + "/include",
		`include_path="` + cur + `/include"`,
		"include_path='" + cur + "/include'",
		"open_basedir=" + cur + ":/tmp",
		`open_basedir = "` + cur + `"`,
		"include_path\t=\t" + cur,
	}
	seps := []string{"\n", "\r", "\r\n", "\t", " ", ";", "[x]", "[x] ", "[x]\t", "]", "x\t", "x ", "\t\t", "=", `"`, "'", "$", "{", "(", ")", "&", "a=1", "a=1\n", "[", "\\", "\x0b", "\x0c"}
	rng := rand.New(rand.NewPCG(10, 3))
	var out []string
	for _, s := range sets {
		for _, p := range seps {
			out = append(out, p+s, "memory_limit=128M"+p+s)
		}
	}
	for range 150 {
		var b strings.Builder
		for range 1 + rng.IntN(5) {
			b.WriteString(seps[rng.IntN(len(seps))])
			if rng.IntN(2) == 0 {
				b.WriteString(sets[rng.IntN(len(sets))])
			}
		}
		out = append(out, b.String())
	}
	files, err := filepath.Glob("../../rewrite/testdata/fuzz/FuzzINI/*")
	require.NoError(t, err)
	require.NotEmpty(t, files, "rewrite's FuzzINI corpus")
	for _, f := range files {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		// go test fuzz v1, then one string(...) line.
		for _, line := range strings.Split(string(data), "\n") {
			if s, ok := strings.CutPrefix(line, "string("); ok {
				if v, err := unquoteGo(strings.TrimSuffix(s, ")")); err == nil {
					out = append(out, strings.ReplaceAll(v, "/var/www/site/htdocs", cur))
				}
			}
		}
	}
	var kept []string
	for _, v := range out {
		if !strings.ContainsRune(v, 0) {
			kept = append(kept, v)
		}
	}
	return kept
}

// throughLink reports whether a ':'-separated list of paths names link or a
// path below it ("/srv/current[x]" is another name, not through the link).
func throughLink(list, link string) bool {
	for _, p := range strings.Split(list, ":") {
		if p == link || strings.HasPrefix(p, link+"/") {
			return true
		}
	}
	return false
}

func unquoteGo(s string) (string, error) { return strconv.Unquote(s) }

// Item 4 of issue #10: php-fpm alone applies the last of two PHP_VALUE
// params whole. Merged, a broken line in the first one must not stop PHP
// before the second one's lines.
func TestE2EDuplicatePHPValueBrokenLine(t *testing.T) {
	site := testenv.NewSite(t, "A")
	fpm := testenv.StartFPM(t, testenv.FPMOptions{Children: 1})
	addr, _, _ := startIncpathd(t,
		"--listen", testenv.FreeAddr(t),
		"--upstream", fpm.Addr,
		"--max-conns", "1",
		"--pool-probe-dir", t.TempDir(),
	)
	got, res := iniReport(t, addr, site.Current, []string{"memory_limit", "upload_max_filesize", "include_path"},
		fcgi.Pair{Name: "PHP_VALUE", Value: "memory_limit=64M\nb=)\nc=1"},
		fcgi.Pair{Name: "PHP_VALUE", Value: "memory_limit=99M\nupload_max_filesize=7M\ninclude_path=" + site.Current + "/include"})
	require.NotNil(t, got, "%+v", res)
	assert.Equal(t, "99M", got["memory_limit"])
	assert.Equal(t, "7M", got["upload_max_filesize"])
	assert.Equal(t, site.Releases["A"]+"/include", got["include_path"])
}

// --pin-default and --pool-probe-dir refuse what they cannot use, naming
// the flag.
func TestPinDefaultFlags(t *testing.T) {
	noEnv := func(string) string { return "" }
	c, err := parse([]string{"--pin-default", "open_basedir=/srv/current:/tmp", "--pin-default", "auto_prepend_file="}, noEnv, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, []rewrite.Setting{{Key: "open_basedir", Value: "/srv/current:/tmp"}, {Key: "auto_prepend_file"}}, c.defaults)
	assert.True(t, c.poolProbe)
	for args, want := range map[string]string{
		"--pin-default=open_basedir":                                "not KEY=VALUE",
		"--pin-default=memory_limit=1G":                             `"memory_limit" is not one of --pin-ini`,
		"--pin-default=include_path=a --pin-default=include_path=b": "include_path given twice",
		`--pin-default=include_path="x`:                             "--pin-default: rewrite: ini value cannot be pinned",
		"--pool-probe-dir=run/x":                                    "--pool-probe-dir",
	} {
		_, err := parse(strings.Fields(args), noEnv, io.Discard)
		require.Error(t, err, args)
		assert.Contains(t, err.Error(), want, args)
	}
}
