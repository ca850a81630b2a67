package proxy

import (
	"fmt"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/rewrite"
	"github.com/incpathd/incpathd/sapi"
)

// checkDocroot refuses a DOCUMENT_ROOT with a NUL byte or a ".." component
// before the Resolver passes it to a system call: the kernel would read
// "/srv/www\x00/../etc" as "/srv/www", and resolve "/srv/www/../../etc"
// to a directory the web server never meant to serve.
func checkDocroot(from string) error {
	return rewrite.CheckPath("DOCUMENT_ROOT", from)
}

// checkAllowed confines a pinned request to Resolver.AllowRoots, when there
// are any: its docroot, which a front end in the docroot list sends
// unresolved by us, and its SCRIPT_FILENAME, which names the file php-fpm
// runs and need not lie below the docroot. Both are compared lexically;
// Rewrite has already refused ".." components in them.
func (p *Proxy) checkAllowed(docroot string, params []fcgi.Pair) error {
	r := p.Resolver
	if len(r.AllowRoots) == 0 {
		return nil
	}
	if !r.Allowed(docroot) {
		return fmt.Errorf("proxy: DOCUMENT_ROOT %q: %w", docroot, sapi.ErrOutsideRoot)
	}
	if script := param(params, "SCRIPT_FILENAME"); script != "" && !r.Allowed(script) {
		return fmt.Errorf("proxy: SCRIPT_FILENAME %q: %w", script, sapi.ErrOutsideRoot)
	}
	return nil
}
