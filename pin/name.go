package pin

import (
	"strings"

	"github.com/incpathd/incpathd/fcgi"
)

// Params that name the front end.
const (
	// ParamSAPI lets the web server configuration name the front end
	// explicitly (for example "fastcgi_param INCPATH_SAPI nginx;"). It wins
	// over SERVER_SOFTWARE, which some set-ups rewrite or omit.
	ParamSAPI = "INCPATH_SAPI"
	// ParamServerSoftware is the CGI/1.1 variable (RFC 3875, 4.1.17) that
	// every supported front end sends by default.
	ParamServerSoftware = "SERVER_SOFTWARE"
)

// Name returns the name of the front end that sent a request.
//
// It is the value of the INCPATH_SAPI param, trimmed and lowercased, if that
// is not empty; otherwise the first product token of SERVER_SOFTWARE,
// lowercased ("nginx/1.22.1" gives "nginx", "Apache/2.4.62 (Debian)" gives
// "apache", "Caddy" gives "caddy"); otherwise "". If a param occurs more than
// once the last one counts, as it does for php-fpm.
//
// The name is the front end's, not PHP's: incpath matched PHP SAPI names
// ("apache2handler", "fpm-fcgi"), but behind incpathd PHP always runs as
// fpm-fcgi, so the web server is what tells the set-ups apart.
//
// Name does not allocate for the common front ends, or for names that are
// already lower case.
func Name(params []fcgi.Pair) string {
	name, _ := nameAndDocroot(params)
	return name
}

// nameAndDocroot returns Name(params) and the value of the last
// DOCUMENT_ROOT param, in one pass over the params.
func nameAndDocroot(params []fcgi.Pair) (name, docroot string) {
	var sapi, software string
	for i := range params {
		switch params[i].Name {
		case ParamSAPI:
			sapi = params[i].Value
		case ParamServerSoftware:
			software = params[i].Value
		case "DOCUMENT_ROOT":
			docroot = params[i].Value
		}
	}
	if s := strings.TrimSpace(sapi); s != "" {
		return lower(s), docroot
	}
	return lower(productToken(software)), docroot
}

// productToken returns the first product name of a SERVER_SOFTWARE value:
// RFC 3875 defines it as products ("name/version") and comments ("(...)").
func productToken(s string) string {
	s = strings.TrimLeft(s, " \t")
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '/', ' ', '\t', '(':
			return s[:i]
		}
	}
	return s
}

// known are the names returned as constants, so that the usual front ends
// cost no allocation even when they spell themselves in capitals.
var known = [...]string{
	"nginx", "apache", "lighttpd", "caddy",
	"openresty", "angie", "freenginx", "h2o",
}

// lower returns s in lower case, as a constant for the known names.
func lower(s string) string {
	for _, k := range known {
		if k == s {
			return k // already lower case, the usual spelling
		}
	}
	for _, k := range known {
		if len(k) == len(s) && strings.EqualFold(k, s) {
			return k
		}
	}
	// strings.ToLower returns s itself when it has no upper case ASCII.
	return strings.ToLower(s)
}
