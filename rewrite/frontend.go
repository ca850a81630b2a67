package rewrite

import "strings"

// Prefixes of SCRIPT_FILENAME that php-fpm strips, up to the next '/'.
const (
	proxyFCGIPrefix     = "proxy:fcgi://"
	proxyBalancerPrefix = "proxy:balancer://"
)

// proxyPrefixLen returns the length of the "proxy:fcgi://host:port" or
// "proxy:balancer://name" prefix that Apache mod_proxy_fcgi puts in front of
// SCRIPT_FILENAME, or 0. It matches as php-fpm does: the scheme case
// insensitively, then everything up to the first '/'; with no '/' after
// the host there is no path, and php-fpm leaves the value alone, so 0.
func proxyPrefixLen(v string) int {
	if v == "" || v[0] != 'p' && v[0] != 'P' {
		return 0 // a path, the usual value: no prefix to compare
	}
	var n int
	switch {
	case hasPrefixFold(v, proxyFCGIPrefix):
		n = len(proxyFCGIPrefix)
	case hasPrefixFold(v, proxyBalancerPrefix):
		n = len(proxyBalancerPrefix)
	default:
		return 0
	}
	i := strings.IndexByte(v[n:], '/')
	if i < 0 {
		return 0
	}
	return n + i
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// ScriptPath returns the path php-fpm opens for a SCRIPT_FILENAME value v:
// v without the prefix Apache mod_proxy_fcgi puts in front of it, and then,
// as php-fpm does for such a value, cut at the first '?' (a query string a
// RewriteRule left there). A value without the prefix is returned as it is.
func ScriptPath(v string) string {
	if !hasPrefixFold(v, proxyFCGIPrefix) && !hasPrefixFold(v, proxyBalancerPrefix) {
		return v
	}
	v = v[proxyPrefixLen(v):]
	if i := strings.IndexByte(v, '?'); i >= 0 {
		v = v[:i]
	}
	return v
}
