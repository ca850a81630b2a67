package pin

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/incpathd/incpathd/fcgi"
)

// The SERVER_SOFTWARE each front end in Debian bookworm really sends with
// its default settings (cmd/incpathd/frontends_test.go checks the mapping
// end to end), and the name to put in --docroot-sapi-list or
// --realpath-sapi-list for it.
func TestNameOfDebianFrontends(t *testing.T) {
	for software, want := range map[string]string{
		"nginx/1.22.1":           "nginx",    // fastcgi_params: nginx/$nginx_version
		"Apache/2.4.71 (Debian)": "apache",   // mod_proxy_fcgi, ServerTokens Full
		"Apache":                 "apache",   // ServerTokens Prod
		"lighttpd/1.4.69":        "lighttpd", // mod_fastcgi
		"Caddy/2.6.2":            "caddy",    // php_fastcgi
		"cgi-fcgi":               "cgi-fcgi", // libfcgi's client sends its environment: whatever the caller sets
	} {
		assert.Equal(t, want, Name([]fcgi.Pair{{Name: ParamServerSoftware, Value: software}}), software)
	}
}
