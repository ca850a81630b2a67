package rewrite

import (
	"fmt"
	"strings"

	"github.com/incpathd/incpathd/pathsafe"
)

// CheckPath returns an error wrapping ErrUnsafePath if the value of the
// param name holds a NUL byte or a ".." component: the checks Rewrite
// makes of DOCUMENT_ROOT and SCRIPT_FILENAME, for a caller that must make
// them before it touches the file system with the path.
//
// A script path with a ".." component could name a file outside the
// docroot once it is joined onto a release directory, so such requests are
// refused, not forwarded.
func CheckPath(name, p string) error {
	if why := pathsafe.Unsafe(p); why != "" {
		return fmt.Errorf("%w: %s in %s", ErrUnsafePath, why, name)
	}
	return nil
}

// cleanRoot checks a docroot given to Rewrite and returns it without
// trailing slashes ("" for the root directory), so that joining it with the
// rest of a path never doubles or drops a slash. ok is false for a path that
// is relative, holds a NUL byte or has a ".." component.
func cleanRoot(p string) (root string, ok bool) {
	if p == "" || p[0] != '/' || strings.IndexByte(p, 0) >= 0 || pathsafe.HasDotDot(p) {
		return "", false
	}
	return trimSlashes(p), true
}

// trimSlashes removes trailing slashes; "/" becomes "".
func trimSlashes(p string) string {
	for len(p) > 0 && p[len(p)-1] == '/' {
		p = p[:len(p)-1]
	}
	return p
}

// hasRoot reports whether p is root or lies below it: root followed by the
// end or a '/'. "/srv/cur" is not a root of "/srv/current/x". root is
// cleaned by cleanRoot, so "" (the root directory) matches any absolute
// path.
func hasRoot(p, root string) bool {
	if !strings.HasPrefix(p, root) {
		return false
	}
	if len(p) == len(root) {
		return root != ""
	}
	return p[len(root)] == '/'
}

// nextMatch returns the index of the first occurrence of pat in s at or
// after i, or -1. When boundary is set the occurrence must be a whole path
// in a list: it must start s or follow a ':' (the separator of include_path
// and open_basedir lists) or a '/' (as in phar:///path), and end s or be
// followed by a '/' or a ':'.
func nextMatch(s, pat string, i int, boundary bool) int {
	for i <= len(s)-len(pat) {
		k := strings.Index(s[i:], pat)
		if k < 0 {
			return -1
		}
		k += i
		if !boundary {
			return k
		}
		e := k + len(pat)
		if (k == 0 || s[k-1] == ':' || s[k-1] == '/') && (e == len(s) || s[e] == '/' || s[e] == ':') {
			return k
		}
		i = k + 1
	}
	return -1
}
