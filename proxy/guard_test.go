package proxy

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/internal/fcgitest"
	"github.com/incpathd/incpathd/pin"
)

// with returns params with name set to value, replacing every occurrence.
func with(params []fcgi.Pair, name, value string) []fcgi.Pair {
	out := make([]fcgi.Pair, 0, len(params)+1)
	for _, p := range params {
		if p.Name != name {
			out = append(out, p)
		}
	}
	return append(out, fcgi.Pair{Name: name, Value: value})
}

// Issue #10, items 5, 6 and 8: every param php-fpm may run as the script is
// confined, in the form php-fpm reads it, for pinned and passed-through
// requests alike.
func TestConfinesScriptParams(t *testing.T) {
	current, a, _ := site(t)
	releases := filepath.Dir(a)
	outside := t.TempDir() + "/evil.php"
	u := fcgitest.StartHandler(t, ok)
	p := &Proxy{
		Pool: &fcgi.Pool{Address: u.Addr},
		Pinner: pin.Pinner{
			Resolver: &pin.Resolver{AllowRoots: []string{releases}},
			Policy:   pin.Policy{RealpathList: []string{"nginx", "apache"}},
		},
	}
	c := fcgitest.Dial(t, front(t, p))
	nginx := nginxParams(current)
	apache := with(nginx, "SERVER_SOFTWARE", "Apache/2.4.62 (Debian)")
	other := with(nginx, "SERVER_SOFTWARE", "h2o/2.2.6")
	for _, tc := range []struct {
		name   string
		params []fcgi.Pair
		status string // "" for forwarded
	}{
		{"apache proxy prefix", with(apache, "SCRIPT_FILENAME", "proxy:fcgi://127.0.0.1:9001"+current+"/index.php"), ""},
		{"apache balancer prefix", with(apache, "SCRIPT_FILENAME", "PROXY:balancer://php"+current+"/index.php"), ""},
		{"apache prefix, script outside", with(apache, "SCRIPT_FILENAME", "proxy:fcgi://localhost"+outside), "403"},
		{"apache prefix, query names a root", with(apache, "SCRIPT_FILENAME", "proxy:fcgi://localhost"+outside+"?"+current), "403"},
		{"path translated outside", with(nginx, "PATH_TRANSLATED", outside), "403"},
		{"path translated alone", with(fcgitest.WithoutParam(nginx, "SCRIPT_FILENAME"), "PATH_TRANSLATED", outside), "403"},
		{"path translated dot-dot", with(nginx, "PATH_TRANSLATED", current+"/a/../../../x.php"), "400"},
		{"path translated relative", with(nginx, "PATH_TRANSLATED", "evil.php"), "403"},
		{"path translated inside", with(nginx, "PATH_TRANSLATED", current+"/a/b"), ""},
		{"passthrough through the docroot", other, ""},
		{"passthrough script outside", with(other, "SCRIPT_FILENAME", outside), "403"},
		{"passthrough path translated outside", with(other, "PATH_TRANSLATED", outside), "403"},
		{"passthrough script dot-dot", with(other, "SCRIPT_FILENAME", current+"/../../x.php"), "400"},
		{"passthrough docroot outside", with(with(other, "DOCUMENT_ROOT", filepath.Dir(outside)), "SCRIPT_FILENAME", outside), "403"},
		{"passthrough in a release", with(with(other, "DOCUMENT_ROOT", a), "SCRIPT_FILENAME", a+"/index.php"), ""},
	} {
		before := len(u.Params())
		res := c.Do(with(tc.params, "QUERY_STRING", tc.name), nil)
		require.NoError(t, res.Err, tc.name)
		if tc.status == "" {
			assert.Equal(t, "Content-Type: text/plain\r\n\r\nhello", string(res.Stdout), tc.name)
			assert.Len(t, u.Params(), before+1, tc.name)
			continue
		}
		assert.True(t, strings.HasPrefix(string(res.Stdout), "Status: "+tc.status+" "), "%s: %q", tc.name, res.Stdout)
		assert.Len(t, u.Params(), before, "%s: refused, never forwarded", tc.name)
	}
}

// Issue #10, item 8: HTTP_PROXY is dropped from passed-through requests too,
// and kept only with KeepHTTPProxy; the rest goes as it came.
func TestPassthroughDropsHTTPProxy(t *testing.T) {
	current, _, _ := site(t)
	for _, keep := range []bool{false, true} {
		u := fcgitest.StartHandler(t, ok)
		p := &Proxy{Pool: &fcgi.Pool{Address: u.Addr}, Pinner: pin.Pinner{Policy: pin.Policy{RealpathList: []string{}}}}
		p.Pinner.Rewrite.KeepHTTPProxy = keep
		c := fcgitest.Dial(t, front(t, p))
		in := with(nginxParams(current), "HTTP_PROXY", "http://attacker.invalid")
		require.NoError(t, c.Do(in, nil).Err)
		got := u.Params()[0]
		if keep {
			assert.Equal(t, in, got)
		} else {
			assert.Equal(t, fcgitest.WithoutParam(in, "HTTP_PROXY"), got)
		}
		assert.Equal(t, uint64(1), p.Stats().Passthrough.Load())
	}
}
