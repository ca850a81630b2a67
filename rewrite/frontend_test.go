package rewrite

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/incpathd/incpathd/fcgi"
)

// The prefixes php-fpm strips from SCRIPT_FILENAME (fpm_main.c,
// init_request_info): the scheme case-insensitively, then up to the first
// '/'. The golden files testdata/rewrite/frontend_apache*.txt show the
// whole request.
func TestProxyPrefixLen(t *testing.T) {
	tests := []struct {
		v    string
		want string // the prefix
	}{
		{"proxy:fcgi://127.0.0.1:9001/var/www/index.php", "proxy:fcgi://127.0.0.1:9001"},
		{"proxy:fcgi://localhost/var/www/index.php", "proxy:fcgi://localhost"},
		{"proxy:fcgi://[::1]:9001/var/www/index.php", "proxy:fcgi://[::1]:9001"},
		{"PROXY:FCGI://localhost/x", "PROXY:FCGI://localhost"},
		{"proxy:balancer://php/var/www/index.php", "proxy:balancer://php"},
		{"proxy:fcgi:///var/www/index.php", "proxy:fcgi://"},
		{"proxy:fcgi://localhost", ""},
		{"proxy:fcgi:/localhost/x", ""},
		{"proxy:unix:/run/php.sock|fcgi://localhost/x", ""}, // Apache never sends this form
		{"fcgi://localhost/x", ""},
		{"/var/www/index.php", ""},
		{"", ""},
	}
	for _, tt := range tests {
		assert.Equal(t, len(tt.want), proxyPrefixLen(tt.v), "%q", tt.v)
	}
}

// Apache's prefix costs no more allocations than a plain path: one buffer
// for the new values.
func TestRewriteApachePrefixAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	in := []fcgi.Pair{
		{Name: "SERVER_SOFTWARE", Value: "Apache/2.4.71 (Debian)"},
		{Name: "DOCUMENT_ROOT", Value: "/var/www/site/current"},
		{Name: "SCRIPT_FILENAME", Value: "proxy:fcgi://127.0.0.1:9001/var/www/site/current/index.php"},
	}
	dst := make([]fcgi.Pair, 0, 8)
	var c Config
	allocs := testing.AllocsPerRun(100, func() {
		out, err := c.Rewrite(dst[:0], in, "/var/www/site/current", "/var/www/site/releases/A")
		if err != nil || out[2].Value != "proxy:fcgi://127.0.0.1:9001/var/www/site/releases/A/index.php" {
			panic(fmt.Sprint(out, err))
		}
	})
	assert.Equal(t, 1.0, allocs)
}
