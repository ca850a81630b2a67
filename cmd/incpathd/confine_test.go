package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/internal/fcgitest"
	"github.com/incpathd/incpathd/internal/testenv"
)

// evilMarker is what the script outside every allowed root prints when it
// runs.
const evilMarker = "OUTSIDE-THE-ROOTS-RAN"

// confineStack is a real php-fpm behind incpathd with --allow-root on the
// site's releases, and a PHP script outside them.
type confineStack struct {
	site *testenv.Site
	evil string // the script outside the roots
	addr string // incpathd's
	fpm  *testenv.FPM
}

func startConfineStack(t *testing.T, args ...string) *confineStack {
	t.Helper()
	s := &confineStack{site: testenv.NewSite(t, "A")}
	outside := t.TempDir()
	s.evil = filepath.Join(outside, "evil.php")
	require.NoError(t, os.WriteFile(s.evil, []byte("<?php echo '"+evilMarker+"', PHP_EOL;\n"), 0o644))
	s.fpm = testenv.StartFPM(t, testenv.FPMOptions{Children: 2})
	s.addr, _, _ = startIncpathd(t, append([]string{
		"--listen", testenv.FreeAddr(t),
		"--upstream", s.fpm.Addr,
		"--allow-root", filepath.Dir(s.site.Releases["A"]),
		"--max-conns", "2",
		"--log-level", "debug",
	}, args...)...)
	return s
}

// Issue #10, item 6: php-fpm runs PATH_TRANSLATED when there is no
// SCRIPT_FILENAME, or when REDIRECT_URL comes with it (cgi.fix_pathinfo=1,
// the default); --allow-root used to check SCRIPT_FILENAME only, and the
// script outside the roots ran. It must be refused before php-fpm sees it.
func TestE2EPathTranslatedConfined(t *testing.T) {
	s := startConfineStack(t)
	good := baseParams(s.site.Current, "")

	// The control: php-fpm does run PATH_TRANSLATED in these shapes, as
	// the direct requests show, so a refusal through incpathd is incpathd's.
	direct := func(params []fcgi.Pair) result {
		c := dialFCGI(t, s.fpm.Addr)
		defer c.nc.Close() // php-fpm holds a worker for the connection
		return c.roundTrip(false, params)
	}
	noScript := withParam(fcgitest.WithoutParam(good, "SCRIPT_FILENAME"), "PATH_TRANSLATED", s.evil)
	redirect := withParam(withParam(good, "PATH_TRANSLATED", s.evil), "REDIRECT_URL", "/index.php")
	for _, tc := range []struct {
		desc   string
		params []fcgi.Pair
		status int
	}{
		{"no SCRIPT_FILENAME", noScript, 403},
		{"REDIRECT_URL", redirect, 403},
		{"dot-dot", withParam(fcgitest.WithoutParam(good, "SCRIPT_FILENAME"), "PATH_TRANSLATED",
			s.site.Releases["A"]+"/include/../../../../"+s.evil), 400},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if tc.status == 403 {
				res := direct(tc.params)
				require.NoError(t, res.err)
				require.Contains(t, res.stdout, evilMarker, "php-fpm itself runs PATH_TRANSLATED here")
			}
			c := dialFCGI(t, s.addr)
			res := c.roundTrip(true, tc.params)
			require.NoError(t, res.err)
			assert.Equal(t, tc.status, res.status, "%s", res.stdout)
			assert.NotContains(t, res.stdout, evilMarker)
		})
	}

	// PATH_TRANSLATED within the roots still works, the usual PATH_INFO
	// request included.
	c := dialFCGI(t, s.addr)
	res := c.roundTrip(true, withParam(withParam(good, "PATH_INFO", "/a/b"), "PATH_TRANSLATED", s.site.Current+"/a/b"))
	require.NoError(t, res.err)
	assert.Equal(t, 200, res.status, "%s", res.stdout)
	assert.Contains(t, res.stdout, `"release":"A"`)
}

// Issue #10, item 8: a front end in neither SAPI list is passed through
// unpinned, but used to skip --allow-root and the httpoxy drop as well.
func TestE2EPassthroughConfined(t *testing.T) {
	s := startConfineStack(t, "--realpath-sapi-list", "nginx")
	other := withParam(baseParams(s.site.Current, ""), "SERVER_SOFTWARE", "h2o/2.2.6")

	c := dialFCGI(t, s.addr)
	res := c.roundTrip(true, withParam(other, "SCRIPT_FILENAME", s.evil))
	require.NoError(t, res.err)
	assert.Equal(t, 403, res.status, "%s", res.stdout)
	assert.NotContains(t, res.stdout, evilMarker)

	res = c.roundTrip(true, withParam(fcgitest.WithoutParam(other, "SCRIPT_FILENAME"), "PATH_TRANSLATED", s.evil))
	require.NoError(t, res.err)
	assert.Equal(t, 403, res.status, "%s", res.stdout)
	assert.NotContains(t, res.stdout, evilMarker)

	// Through the docroot symlink, as such a front end names its scripts,
	// it runs, unpinned, without the client's Proxy: header.
	req := withParam(other, "SCRIPT_FILENAME", s.site.Current+"/server.php")
	req = withParam(req, "QUERY_STRING", "names=SCRIPT_FILENAME,HTTP_PROXY")
	req = withParam(req, "HTTP_PROXY", "http://attacker.invalid:8080")
	res = c.roundTrip(true, req)
	require.NoError(t, res.err)
	assert.Equal(t, 200, res.status, "%s", res.stdout)
	assert.Contains(t, res.stdout, `"SCRIPT_FILENAME":{"server":"`+s.site.Current+`/server.php"`, "not pinned")
	assert.Contains(t, res.stdout, `"HTTP_PROXY":{"server":null`)
	assert.NotContains(t, res.stdout, "attacker.invalid")
}
