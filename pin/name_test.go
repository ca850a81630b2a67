package pin

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/incpathd/incpathd/fcgi"
)

func TestName(t *testing.T) {
	tests := []struct {
		desc   string
		params []fcgi.Pair
		want   string
	}{
		{"nginx", software("nginx/1.22.1"), "nginx"},
		{"nginx without version", software("nginx"), "nginx"},
		{"apache debian", software("Apache/2.4.62 (Debian)"), "apache"},
		{"apache ServerTokens Prod", software("Apache"), "apache"},
		{"apache full", software("Apache/2.4.62 (Unix) OpenSSL/3.0.15 PHP/8.2.36"), "apache"},
		{"lighttpd", software("lighttpd/1.4.69"), "lighttpd"},
		{"caddy", software("Caddy"), "caddy"},
		{"caddy v2", software("Caddy/v2.8.4"), "caddy"},
		{"openresty", software("openresty/1.25.3.1"), "openresty"},
		{"angie", software("Angie/1.6.0"), "angie"},
		{"h2o", software("h2o/2.2.6"), "h2o"},
		{"unknown, lowercased", software("Microsoft-IIS/10.0"), "microsoft-iis"},
		{"leading blanks", software("  \tnginx/1.22.1"), "nginx"},
		{"comment only", software("(Debian)"), ""},
		{"empty software", software(""), ""},
		{"no params", nil, ""},
		{"other params only", []fcgi.Pair{pair("SCRIPT_FILENAME", "/srv/www/index.php")}, ""},
		{
			"INCPATH_SAPI wins",
			[]fcgi.Pair{pair("SERVER_SOFTWARE", "nginx/1.22.1"), pair("INCPATH_SAPI", "Edge-Nginx")},
			"edge-nginx",
		},
		{
			"INCPATH_SAPI first",
			[]fcgi.Pair{pair("INCPATH_SAPI", "apache"), pair("SERVER_SOFTWARE", "nginx/1.22.1")},
			"apache",
		},
		{
			"INCPATH_SAPI trimmed",
			[]fcgi.Pair{pair("INCPATH_SAPI", " Caddy \t")},
			"caddy",
		},
		{
			"empty INCPATH_SAPI falls back",
			[]fcgi.Pair{pair("INCPATH_SAPI", " "), pair("SERVER_SOFTWARE", "lighttpd/1.4.69")},
			"lighttpd",
		},
		{
			"last SERVER_SOFTWARE wins, as in php-fpm",
			[]fcgi.Pair{pair("SERVER_SOFTWARE", "nginx/1.22.1"), pair("SERVER_SOFTWARE", "Apache")},
			"apache",
		},
		{
			"last INCPATH_SAPI wins",
			[]fcgi.Pair{pair("INCPATH_SAPI", "one"), pair("INCPATH_SAPI", "two")},
			"two",
		},
		{
			"param names are case-sensitive",
			[]fcgi.Pair{pair("incpath_sapi", "x"), pair("server_software", "nginx")},
			"",
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			assert.Equal(t, tt.want, Name(tt.params))
		})
	}
}

func pair(name, value string) fcgi.Pair { return fcgi.Pair{Name: name, Value: value} }

func software(s string) []fcgi.Pair {
	return []fcgi.Pair{
		pair("SCRIPT_FILENAME", "/srv/www/current/index.php"),
		pair("SERVER_SOFTWARE", s),
		pair("DOCUMENT_ROOT", "/srv/www/current"),
	}
}

func TestNameNoAlloc(t *testing.T) {
	for _, s := range []string{"nginx/1.22.1", "Apache/2.4.62 (Debian)", "lighttpd/1.4.69", "Caddy", "Caddy/v2.8.4", "other/1"} {
		params := software(s)
		assert.Zero(t, testing.AllocsPerRun(100, func() { Name(params) }), s)
	}
	params := []fcgi.Pair{pair("INCPATH_SAPI", "NGINX")}
	assert.Zero(t, testing.AllocsPerRun(100, func() { Name(params) }), "INCPATH_SAPI")
}

func BenchmarkName(b *testing.B) {
	params := software("Apache/2.4.62 (Debian)")
	b.ReportAllocs()
	for b.Loop() {
		Name(params)
	}
}
