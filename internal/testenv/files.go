package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

var (
	moduleRootOnce sync.Once
	moduleRootDir  string
	moduleRootErr  error
)

// ModuleRoot returns the module's root directory: the nearest directory
// holding go.mod at or above the working directory (go test runs in the
// package's directory), or else above this source file.
func ModuleRoot(t testing.TB) string {
	t.Helper()
	moduleRootOnce.Do(func() { moduleRootDir, moduleRootErr = findModuleRoot() })
	if moduleRootErr != nil {
		t.Fatal(moduleRootErr)
	}
	return moduleRootDir
}

func findModuleRoot() (string, error) {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		starts = append(starts, filepath.Dir(file))
	}
	for _, dir := range starts {
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				return dir, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", errors.New("testenv: no go.mod above the working directory")
}

// ReadModuleFile returns the contents of a file of the repository, named
// relative to the module root, for example "examples/nginx/incpathd.conf".
func ReadModuleFile(t testing.TB, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(ModuleRoot(t), filepath.FromSlash(rel)))
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return string(b)
}

// Fill returns text with each old string of oldnew replaced by the new one
// that follows it, in order, as strings.NewReplacer would but one pair at a
// time. It fails the test if an old string does not occur in the text as
// it stands when its turn comes: a configuration example that no longer
// holds the value a test replaces has changed under the test, and the test
// must be told rather than run against a file it no longer controls.
func Fill(t testing.TB, text string, oldnew ...string) string {
	t.Helper()
	s, err := fill(text, oldnew...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func fill(text string, oldnew ...string) (string, error) {
	if len(oldnew)%2 != 0 {
		return "", errors.New("testenv: Fill needs old, new pairs")
	}
	for i := 0; i < len(oldnew); i += 2 {
		old, repl := oldnew[i], oldnew[i+1]
		if old == "" || !strings.Contains(text, old) {
			return "", fmt.Errorf("testenv: %q does not occur in the text to fill", old)
		}
		text = strings.ReplaceAll(text, old, repl)
	}
	return text, nil
}

// AllowTraverse gives every user search permission (o+x) on dir and on each
// of its parents inside the system's temporary directory, which t.TempDir
// creates 0700, so that a server whose workers run as another user (Apache's
// run as nobody when the tests run as root) can reach the files below dir.
// Read permission is not added, and nothing outside the temporary directory
// changes.
func AllowTraverse(t testing.TB, dir string) {
	t.Helper()
	if err := allowTraverse(dir); err != nil {
		t.Fatal(err)
	}
}

func allowTraverse(dir string) error {
	tmp, err := filepath.EvalSymlinks(os.TempDir())
	if err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	if !strings.HasPrefix(real, tmp+string(filepath.Separator)) {
		return fmt.Errorf("testenv: AllowTraverse: %s is not inside %s", dir, tmp)
	}
	for d := real; d != tmp; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("testenv: %w", err)
		}
		if err := os.Chmod(d, fi.Mode().Perm()|0o001); err != nil {
			return fmt.Errorf("testenv: %w", err)
		}
	}
	return nil
}
