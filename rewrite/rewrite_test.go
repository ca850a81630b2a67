package rewrite

import (
	"errors"
	"slices"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fcgi"
)

const (
	testFrom = "/var/www/site/htdocs"
	testTo   = "/var/www/site/releases/A/htdocs"
)

// nginxParams returns the params nginx sends with fastcgi_params, a
// PHP_VALUE carrying include_path, and a browser's headers: 30 params.
func nginxParams() []fcgi.Pair {
	return []fcgi.Pair{
		{Name: "QUERY_STRING", Value: "page=2&sort=date"},
		{Name: "REQUEST_METHOD", Value: "GET"},
		{Name: "CONTENT_TYPE", Value: ""},
		{Name: "CONTENT_LENGTH", Value: ""},
		{Name: "SCRIPT_NAME", Value: "/index.php"},
		{Name: "REQUEST_URI", Value: "/blog/?page=2&sort=date"},
		{Name: "DOCUMENT_URI", Value: "/index.php"},
		{Name: "DOCUMENT_ROOT", Value: "/var/www/site/htdocs"},
		{Name: "SERVER_PROTOCOL", Value: "HTTP/1.1"},
		{Name: "REQUEST_SCHEME", Value: "https"},
		{Name: "HTTPS", Value: "on"},
		{Name: "GATEWAY_INTERFACE", Value: "CGI/1.1"},
		{Name: "SERVER_SOFTWARE", Value: "nginx/1.22.1"},
		{Name: "REMOTE_ADDR", Value: "198.51.100.23"},
		{Name: "REMOTE_PORT", Value: "53422"},
		{Name: "SERVER_ADDR", Value: "192.0.2.1"},
		{Name: "SERVER_PORT", Value: "443"},
		{Name: "SERVER_NAME", Value: "www.example.org"},
		{Name: "REDIRECT_STATUS", Value: "200"},
		{Name: "SCRIPT_FILENAME", Value: "/var/www/site/htdocs/index.php"},
		{Name: "PATH_INFO", Value: ""},
		{Name: "PHP_VALUE", Value: "include_path=\".:/var/www/site/htdocs/../include:/usr/share/php\"\nmemory_limit=256M"},
		{Name: "HTTP_HOST", Value: "www.example.org"},
		{Name: "HTTP_USER_AGENT", Value: "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"},
		{Name: "HTTP_ACCEPT", Value: "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"},
		{Name: "HTTP_ACCEPT_LANGUAGE", Value: "en-US,en;q=0.5"},
		{Name: "HTTP_ACCEPT_ENCODING", Value: "gzip, deflate, br, zstd"},
		{Name: "HTTP_COOKIE", Value: "session=8f14e45fceea167a5a36dedd4bea2543; theme=dark"},
		{Name: "HTTP_UPGRADE_INSECURE_REQUESTS", Value: "1"},
		{Name: "HTTP_CONNECTION", Value: "keep-alive"},
	}
}

func value(t testing.TB, ps []fcgi.Pair, name string) string {
	t.Helper()
	i := slices.IndexFunc(ps, func(p fcgi.Pair) bool { return p.Name == name })
	require.GreaterOrEqual(t, i, 0, "no %s", name)
	return ps[i].Value
}

func TestRewriteNginx(t *testing.T) {
	in := nginxParams()
	keep := slices.Clone(in)
	var c Config
	out, err := c.Rewrite(nil, in, testFrom, testTo)
	require.NoError(t, err)
	assert.Equal(t, keep, in, "in modified")
	require.Len(t, out, len(in))
	assert.Equal(t, testTo, value(t, out, "DOCUMENT_ROOT"))
	assert.Equal(t, testTo+"/index.php", value(t, out, "SCRIPT_FILENAME"))
	assert.Equal(t, "include_path=\".:"+testTo+"/../include:/usr/share/php\"\nmemory_limit=256M", value(t, out, "PHP_VALUE"))
	for i := range in {
		assert.Equal(t, in[i].Name, out[i].Name, "order changed at %d", i)
	}
}

func TestRewriteNilConfig(t *testing.T) {
	var c *Config
	out, err := c.Rewrite(nil, nginxParams(), testFrom, testTo)
	require.NoError(t, err)
	want, err := new(Config).Rewrite(nil, nginxParams(), testFrom, testTo)
	require.NoError(t, err)
	assert.Equal(t, want, out)
}

func TestRewriteAppendsToDst(t *testing.T) {
	dst := []fcgi.Pair{{Name: "KEEP", Value: "me"}}
	out, err := new(Config).Rewrite(dst, nginxParams(), testFrom, testTo)
	require.NoError(t, err)
	require.Len(t, out, 1+len(nginxParams()))
	assert.Equal(t, fcgi.Pair{Name: "KEEP", Value: "me"}, out[0])
}

func TestRewriteErrorKeepsDst(t *testing.T) {
	dst := make([]fcgi.Pair, 1, 64)
	dst[0] = fcgi.Pair{Name: "KEEP", Value: "me"}
	in := nginxParams()
	in = append(in, fcgi.Pair{Name: "SCRIPT_FILENAME", Value: "/var/www/site/htdocs/../x.php"})
	out, err := new(Config).Rewrite(dst, in, testFrom, testTo)
	require.ErrorIs(t, err, ErrUnsafePath)
	assert.Equal(t, dst, out)
}

func TestRewriteErrors(t *testing.T) {
	tests := []struct {
		name     string
		cfg      Config
		from, to string
		in       []fcgi.Pair
		want     error
	}{
		{"relative to", Config{}, testFrom, "releases/A", nil, ErrDocroot},
		{"empty from", Config{}, "", testTo, nil, ErrDocroot},
		{"dotdot to", Config{}, testFrom, "/var/www/site/releases/../A", nil, ErrDocroot},
		{"NUL docroot", Config{}, testFrom, testTo, []fcgi.Pair{{Name: "DOCUMENT_ROOT", Value: "/x\x00"}}, ErrUnsafePath},
		{"NUL path translated", Config{}, testFrom, testTo, []fcgi.Pair{{Name: "PATH_TRANSLATED", Value: "/x\x00"}}, ErrUnsafePath},
		{"NUL admin value", Config{}, testFrom, testTo, []fcgi.Pair{{Name: "PHP_ADMIN_VALUE", Value: "a=\x00"}}, ErrINIValue},
		{"base with quote", Config{IncludePath: `.:"/x"`}, testFrom, testTo, nil, ErrINIValue},
		{"expansion", Config{}, testFrom, testTo, []fcgi.Pair{{Name: "PHP_VALUE", Value: `open_basedir="${TMP}"`}}, ErrINIValue},
		// The docroot's '$' meets the '{' after a placeholder.
		{"expansion at a seam", Config{SearchReplacePattern: "@D@"}, testFrom, "/srv/x$",
			[]fcgi.Pair{{Name: "PHP_VALUE", Value: `include_path="@D@{HOME}"`}}, ErrINIValue},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := tt.cfg.Rewrite(nil, tt.in, tt.from, tt.to)
			require.ErrorIs(t, err, tt.want)
			assert.Nil(t, out)
			assert.Regexp(t, `^rewrite: `, err.Error())
		})
	}
}

// TestRewriteBaseEveryRequest guards the php-fpm leak: with a base, a
// request that sends no include_path still sends a pinned one, so the
// previous request's release does not stay in force in the worker.
func TestRewriteBaseEveryRequest(t *testing.T) {
	c := Config{IncludePath: ".:/var/www/site/htdocs/lib"}
	for _, to := range []string{testTo, "/var/www/site/releases/B/htdocs"} {
		out, err := c.Rewrite(nil, []fcgi.Pair{{Name: "DOCUMENT_ROOT", Value: testFrom}}, testFrom, to)
		require.NoError(t, err)
		assert.Equal(t, `include_path=".:`+to+`/lib"`, value(t, out, "PHP_VALUE"))
	}
}

// TestRewriteManyParams checks the duplicate detection past the stack
// arrays against a plain quadratic reference.
func TestRewriteManyParams(t *testing.T) {
	for _, n := range []int{0, 1, 63, 64, 65, 127, 128, 129, 300, 5000} {
		var in []fcgi.Pair
		for i := range n {
			// Every 7th name repeats an earlier one.
			name := "HTTP_X_" + strconv.Itoa(i)
			if i%7 == 6 {
				name = "HTTP_X_" + strconv.Itoa(i/3)
			}
			in = append(in, fcgi.Pair{Name: name, Value: strconv.Itoa(i)})
		}
		out, err := new(Config).Rewrite(nil, in, testFrom, testTo)
		require.NoError(t, err)
		assert.Equal(t, dedupReference(in), out, "n=%d", n)
	}
}

// TestRewriteCollidingNames sends header names that agree in length and in
// their first and last eight bytes, as a client could to make the fast hash
// collide: the table falls back to maphash and the result stays right.
func TestRewriteCollidingNames(t *testing.T) {
	var in []fcgi.Pair
	for i := range 500 {
		name := "HTTP_X_" + strconv.Itoa(10000+i%400) + "_PADDING"
		in = append(in, fcgi.Pair{Name: name, Value: strconv.Itoa(i)})
	}
	tab := newTable(make([]uint32, 1024), len(in))
	gaveUp := false
	for i := range in {
		if tab.insert(in, i, fastHash(in[i].Name), maxProbe) < 0 {
			gaveUp = true
			break
		}
	}
	require.True(t, gaveUp, "fast hash did not give up")

	out, err := new(Config).Rewrite(nil, in, testFrom, testTo)
	require.NoError(t, err)
	assert.Equal(t, dedupReference(in), out)
}

// dedupReference sends each name once, at its first position, with its
// last value.
func dedupReference(in []fcgi.Pair) []fcgi.Pair {
	out := []fcgi.Pair{}
	for i, p := range in {
		if slices.ContainsFunc(in[:i], func(q fcgi.Pair) bool { return q.Name == p.Name }) {
			continue
		}
		for _, q := range in[i+1:] {
			if q.Name == p.Name {
				p.Value = q.Value
			}
		}
		out = append(out, p)
	}
	return out
}

func TestRewriteManyPins(t *testing.T) {
	var keys []string
	var lines string
	for i := range 2 * stackPins {
		k := "key" + strconv.Itoa(i)
		keys = append(keys, k)
		lines += k + "=" + testFrom + "/" + k + "\n"
	}
	c := Config{PinINI: keys}
	out, err := c.Rewrite(nil, []fcgi.Pair{{Name: "PHP_VALUE", Value: lines}}, testFrom, testTo)
	require.NoError(t, err)
	var want string
	for i, k := range keys {
		if i > 0 {
			want += "\n"
		}
		want += k + `="` + testTo + "/" + k + `"`
	}
	assert.Equal(t, want, value(t, out, "PHP_VALUE"))
}

func TestRewriteEmptyPinList(t *testing.T) {
	v := `include_path=".:/var/www/site/htdocs/lib"`
	c := Config{PinINI: []string{}, IncludePath: "/unused"}
	out, err := c.Rewrite(nil, []fcgi.Pair{{Name: "PHP_VALUE", Value: v}}, testFrom, testTo)
	require.NoError(t, err)
	// Not pinned, but the request sets include_path: no base is added.
	assert.Equal(t, v, value(t, out, "PHP_VALUE"))
}

func TestRewriteAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	var c Config
	dst := make([]fcgi.Pair, 0, 64)
	tests := []struct {
		name     string
		in       []fcgi.Pair
		from, to string
		want     float64
	}{
		{"pinned", nginxParams(), testFrom, testTo, 1},
		{"not a symlink", nginxParams()[:20], testFrom, testFrom, 0},
		{"nothing to pin", nginxParams()[22:], testFrom, testTo, 0},
	}
	for _, tt := range tests {
		allocs := testing.AllocsPerRun(100, func() {
			var err error
			dst, err = c.Rewrite(dst[:0], tt.in, tt.from, tt.to)
			if err != nil {
				panic(err)
			}
		})
		assert.Equal(t, tt.want, allocs, "%s: allocations per Rewrite", tt.name)
	}
}

func TestErrorsArePrefixed(t *testing.T) {
	for _, err := range []error{ErrDocroot, ErrUnsafePath, ErrINIValue} {
		assert.Regexp(t, `^rewrite: `, err.Error())
		assert.True(t, errors.Is(err, err))
	}
}

// The dedup table indexes with a mask: its length must be a power of two.
func TestTableSizes(t *testing.T) {
	for _, n := range []int{smallParams, stackParams} {
		assert.Zero(t, n&(n-1), "%d is not a power of two", n)
	}
}
