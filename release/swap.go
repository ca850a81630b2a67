package release

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// replaceLink points the symlink path at target atomically: it creates the
// symlink under a temporary name in the same directory and renames it over
// path. rename(2) replaces a symlink without following it, and every
// reader sees either the old link or the new one. The temporary name lies
// in the same directory because rename cannot cross file systems; it starts
// with a dot so that listings of the directory skip it. On failure the
// temporary link is removed.
func replaceLink(path, target string) error {
	dir, base := filepath.Split(path)
	for range 100 {
		tmp := filepath.Join(dir, "."+base+".tmp-"+randomSuffix())
		err := os.Symlink(target, tmp)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			os.Remove(tmp)
			return err
		}
		return nil
	}
	return fmt.Errorf("release: no free temporary name for %s", path)
}

func randomSuffix() string {
	var b [8]byte
	rand.Read(b[:]) // never fails
	return hex.EncodeToString(b[:])
}

// readLink returns the target of the symlink path, or "" when nothing
// exists there. Anything else at path fails with ErrNotLink.
func readLink(path string) (string, error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if fi.Mode()&fs.ModeSymlink == 0 {
		what := "a file"
		if fi.IsDir() {
			what = "a directory"
		}
		return "", fmt.Errorf("%w: %s is %s", ErrNotLink, path, what)
	}
	return os.Readlink(path)
}
