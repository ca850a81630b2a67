package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// BuildIncpathd builds this module's incpathd command into t.TempDir() and
// returns the binary's path, for tests that run it as users do: from a
// script, as a separate process. It needs the go command; go test puts the
// one that runs it first in PATH.
func BuildIncpathd(t testing.TB) string {
	t.Helper()
	site, err := testdataSite()
	if err != nil {
		t.Fatal(err)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("testenv: no go command in PATH to build incpathd: %v", err)
	}
	out := filepath.Join(t.TempDir(), "incpathd")
	cmd := exec.Command(goBin, "build", "-o", out, "./cmd/incpathd")
	cmd.Dir = filepath.Dir(filepath.Dir(site)) // the module root
	cmd.Env = os.Environ()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testenv: go build ./cmd/incpathd: %v\n%s", err, b)
	}
	return out
}
