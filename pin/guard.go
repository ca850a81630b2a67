package pin

import (
	"fmt"
	"strings"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/rewrite"
)

// checkDocroot refuses a DOCUMENT_ROOT with a NUL byte or a ".." component
// before the Resolver passes it to a system call: the kernel would read
// "/srv/www\x00/../etc" as "/srv/www", and resolve "/srv/www/../../etc"
// to a directory the web server never meant to serve.
func checkDocroot(from string) error {
	return rewrite.CheckPath("DOCUMENT_ROOT", from)
}

// scriptParams are the params php-fpm may open and run as the request's
// script (sapi/fpm/fpm/fpm_main.c, init_request_info, php-fpm 8.2):
//
//   - SCRIPT_FILENAME, after the "proxy:fcgi://host:port" prefix of Apache
//     mod_proxy_fcgi, cut at a '?' (see rewrite.ScriptPath);
//   - PATH_TRANSLATED, in three cases: when SCRIPT_FILENAME is absent (for
//     "broken servers"); with cgi.fix_pathinfo=1, the default, whenever
//     REDIRECT_URL is also sent and the two differ (taken for Apache
//     mod_fastcgi, whose SCRIPT_FILENAME names the php binary); and with
//     cgi.fix_pathinfo=0, always. That is a php.ini setting incpathd cannot
//     see, so PATH_TRANSLATED is confined whenever it is sent.
//
// With fix_pathinfo, php-fpm may run a shorter path than the one given
// (index.php out of /index.php/a/b), never a longer one: a path that lies
// below a root only ever shortens to one below it, or to a directory, which
// php-fpm does not run. ORIG_SCRIPT_FILENAME, ORIG_PATH_TRANSLATED and
// ORIG_SCRIPT_NAME are written by php-fpm, never read. SCRIPT_NAME is run
// only with the php.ini settings doc_root or user_dir, which incpathd leaves
// to the pool's configuration (see README, Limits and hardening).
var scriptParams = [...]string{"SCRIPT_FILENAME", "PATH_TRANSLATED"}

// scriptPath returns the path php-fpm would open for the script param
// name with value v.
func scriptPath(name, v string) string {
	if name == "SCRIPT_FILENAME" {
		return rewrite.ScriptPath(v)
	}
	return v
}

// checkAllowed confines a pinned request to Resolver.AllowRoots, when there
// are any: its docroot, which a front end in the docroot list sends
// unresolved by us, and every param php-fpm may run as the script (see
// scriptParams), which need not lie below the docroot. All are compared
// lexically: Rewrite has refused a ".." component in SCRIPT_FILENAME, and
// checkScript refuses one in PATH_TRANSLATED.
func (p *Pinner) checkAllowed(docroot string, params []fcgi.Pair) error {
	r := p.resolver()
	if len(r.AllowRoots) == 0 {
		return nil
	}
	if !r.Allowed(docroot) {
		return fmt.Errorf("pin: DOCUMENT_ROOT %q: %w", docroot, ErrOutsideRoot)
	}
	return confineScripts(params, func(path string) (bool, error) { return r.Allowed(path), nil })
}

// confineScripts checks every param php-fpm may run as the script (see
// scriptParams) that params hold: its path must be safe (checkScript) and
// allowed say yes to it, or the request is refused with ErrOutsideRoot.
func confineScripts(params []fcgi.Pair, allowed func(path string) (bool, error)) error {
	for _, name := range scriptParams {
		v := fcgi.Param(params, name)
		if v == "" {
			continue
		}
		path, err := checkScript(name, v)
		if err != nil {
			return err
		}
		ok, err := allowed(path)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("pin: %s %q: %w", name, v, ErrOutsideRoot)
		}
	}
	return nil
}

// checkScript returns the path php-fpm would run for the script param name
// with value v, or an error wrapping rewrite.ErrUnsafePath if it holds a NUL
// byte or a ".." component, which a lexical comparison with a root cannot
// judge: /srv/releases/A/link/../x is below the release as written and
// anywhere on disk.
func checkScript(name, v string) (string, error) {
	path := scriptPath(name, v)
	if err := rewrite.CheckPath(name, path); err != nil {
		return "", err
	}
	return path, nil
}

// passthrough copies the params of a request in neither SAPI list to dst
// unpinned, with the same hygiene as a pinned request: HTTP_PROXY is dropped
// unless Rewrite.KeepHTTPProxy, and what php-fpm may run as the script must
// lie within Resolver.AllowRoots, if there are any (see confine).
func (p *Pinner) passthrough(dst, in []fcgi.Pair) ([]fcgi.Pair, error) {
	if err := p.confine(in); err != nil {
		return dst, err
	}
	for _, pair := range in {
		if pair.Name == "HTTP_PROXY" && !p.Rewrite.KeepHTTPProxy {
			continue
		}
		dst = append(dst, pair)
	}
	return dst, nil
}

// confine checks, for an unpinned request, that every param php-fpm may run
// as the script (see scriptParams) lies within Resolver.AllowRoots. Such a
// request still names its files through the docroot symlink
// (/srv/site/current/index.php), which is not below a release directory as
// written: a script path below DOCUMENT_ROOT is checked below the docroot
// resolved as for a pinned request (cached and watched the same way), which
// must itself lie within the roots; any other is compared as it is.
func (p *Pinner) confine(in []fcgi.Pair) error {
	r := p.resolver()
	if len(r.AllowRoots) == 0 {
		return nil
	}
	docroot := strings.TrimRight(fcgi.Param(in, "DOCUMENT_ROOT"), "/")
	resolved := ""
	return confineScripts(in, func(path string) (bool, error) {
		if r.Allowed(path) {
			return true, nil
		}
		rest, below := strings.CutPrefix(path, docroot)
		if docroot == "" || !below || rest != "" && rest[0] != '/' {
			return false, nil
		}
		if resolved == "" {
			if err := checkDocroot(docroot); err != nil {
				return false, err
			}
			var err error
			if resolved, err = r.Resolve(docroot); err != nil {
				return false, err
			}
		}
		return r.Allowed(resolved + rest), nil
	})
}
