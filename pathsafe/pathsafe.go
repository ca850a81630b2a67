// Package pathsafe holds the path checks every part of incpathd that takes
// a path from a request, a flag or a link makes before it trusts it: whether
// a path lies within a root by whole components, whether it holds a ".."
// component or a NUL byte, and the one walk through symlinks, with one link
// limit, that pinning, release/ and control/ follow when they must see every
// entry a resolution goes through.
package pathsafe

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// MaxLinks bounds the symlinks Walk follows for one path: Linux's
// MAXSYMLINKS, past which the kernel itself fails with ELOOP. A walk that
// needs more would not resolve for PHP either.
const MaxLinks = 40

// Within reports whether the clean path p is root or below it, by whole
// components: /srv/www2 is not within /srv/www. Both must be clean
// (filepath.Clean); nothing touches the file system.
func Within(p, root string) bool {
	if root == "/" {
		return true
	}
	return p == root || len(p) > len(root) && p[len(root)] == '/' && p[:len(root)] == root
}

// HasDotDot reports whether p has a ".." component. It looks only at the
// places ".." occurs (strings.Index), no split: rewrite/ calls it for every
// request's DOCUMENT_ROOT and SCRIPT_FILENAME.
func HasDotDot(p string) bool {
	for i := 0; ; {
		k := strings.Index(p[i:], "..")
		if k < 0 {
			return false
		}
		k += i
		if (k == 0 || p[k-1] == '/') && (k+2 == len(p) || p[k+2] == '/') {
			return true
		}
		i = k + 1
	}
}

// Unsafe says what makes p unsafe to hand to a system call or to compare
// with a root as written, or "" if nothing does: a NUL byte, which ends a C
// string early (the kernel reads "/srv/www\x00/../etc" as "/srv/www"), or a
// ".." component, which names different directories lexically and on disk
// once a link lies before it. Callers wrap it in their own error.
func Unsafe(p string) string {
	switch {
	case strings.IndexByte(p, 0) >= 0:
		return "NUL byte"
	case HasDotDot(p):
		return `".." component`
	}
	return ""
}

// Walker follows an absolute path through the file system one component
// at a time, as realpath(3) does, so that its caller sees every directory
// entry the resolution looks up (symlinks and their targets' components
// included), which filepath.EvalSymlinks hides. The zero Walker uses the
// real file system.
type Walker struct {
	// Visit, if not nil, is called with each entry before it is looked up:
	// name in dir, a physical directory (no symlinks in it), and their
	// join, next. An error stops the walk and is returned as it is.
	Visit func(dir, name, next string) error
	// Lstat and Readlink replace os.Lstat and os.Readlink when not nil
	// (tests).
	Lstat    func(string) (fs.FileInfo, error)
	Readlink func(string) (string, error)
}

// Walk returns the physical path of the absolute path p, with the FileInfo
// of its last entry (nil for "/"). A component other than the last that is
// not a directory fails with ENOTDIR, more than MaxLinks symlinks with
// ELOOP, and any lookup with its own error.
func (w *Walker) Walk(p string) (string, fs.FileInfo, error) {
	dir, rest := "/", p
	var last fs.FileInfo
	links := 0
	for rest != "" {
		var name string
		name, rest, _ = strings.Cut(rest, "/")
		switch name {
		case "", ".":
			continue
		case "..":
			// dir holds no symlinks, so its parent is its lexical one.
			dir, last = filepath.Dir(dir), nil
			continue
		}
		if last != nil && !last.IsDir() {
			return "", nil, fmt.Errorf("%s: %w", dir, syscall.ENOTDIR)
		}
		next := filepath.Join(dir, name)
		if w.Visit != nil {
			if err := w.Visit(dir, name, next); err != nil {
				return "", nil, err
			}
		}
		fi, err := w.lstat(next)
		if err != nil {
			return "", nil, err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			dir, last = next, fi
			continue
		}
		if links++; links > MaxLinks {
			return "", nil, fmt.Errorf("%s: more than %d symlinks: %w", p, MaxLinks, syscall.ELOOP)
		}
		target, err := w.readlink(next)
		if err != nil {
			return "", nil, err
		}
		if strings.HasPrefix(target, "/") {
			dir, last = "/", nil
		}
		rest = target + "/" + rest
	}
	return dir, last, nil
}

func (w *Walker) lstat(p string) (fs.FileInfo, error) {
	if w.Lstat != nil {
		return w.Lstat(p)
	}
	return os.Lstat(p)
}

func (w *Walker) readlink(p string) (string, error) {
	if w.Readlink != nil {
		return w.Readlink(p)
	}
	return os.Readlink(p)
}
