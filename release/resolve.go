package release

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// maxLinks bounds the symlinks followed while resolving one path, as
// filepath.EvalSymlinks does.
const maxLinks = 255

// throughError: resolving a release visited the link being replaced, or
// its previous-target record.
type throughError struct{ path string }

func (e *throughError) Error() string { return "resolves through " + e.path }

// resolve returns the physical path of the absolute path p, following every
// symlink as filepath.EvalSymlinks does, but fails with a *throughError when
// the walk visits one of the physical paths avoid. filepath.EvalSymlinks cannot say
// that: it would follow the link to its current target, and a release that
// resolves through the link would be accepted, then turned into a link that
// points at itself.
func resolve(p string, avoid ...string) (string, error) {
	dest := "/"
	rest := p
	links := 0
	for rest != "" {
		var comp string
		comp, rest, _ = strings.Cut(rest, "/")
		switch comp {
		case "", ".":
			continue
		case "..":
			// dest holds no symlinks, so its parent is its lexical one.
			dest = filepath.Dir(dest)
			continue
		}
		next := filepath.Join(dest, comp)
		for _, a := range avoid {
			if next == a {
				return "", &throughError{a}
			}
		}
		fi, err := os.Lstat(next)
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			dest = next
			continue
		}
		if links++; links > maxLinks {
			return "", fmt.Errorf("resolve %s: more than %d symlinks", p, maxLinks)
		}
		target, err := os.Readlink(next)
		if err != nil {
			return "", err
		}
		if filepath.IsAbs(target) {
			dest = "/"
		}
		rest = target + "/" + rest
	}
	return dest, nil
}

// within reports whether the clean path p is root or lies below it, by
// whole components: /srv/www2 is not within /srv/www.
func within(p, root string) bool {
	if root == "/" {
		return true
	}
	return p == root || len(p) > len(root) && p[len(root)] == '/' && p[:len(root)] == root
}
