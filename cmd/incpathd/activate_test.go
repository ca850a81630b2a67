package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/internal/testsupport"
)

// selfAsIncpathd returns a command that runs this test binary as incpathd
// (see TestMain). Under the race detector a process sleeps a second at exit
// unless told not to.
func selfAsIncpathd(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = setEnv(setEnv(os.Environ(), "INCPATHD_TEST_MAIN", "1"), "GORACE", "atexit_sleep_ms=0")
	return cmd
}

// runCmd runs incpathd in this process and returns its exit status, stdout
// and stderr.
func runCmd(env map[string]string, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(context.Background(), args, func(k string) string { return env[k] }, &out, &errb, nil)
	return code, out.String(), errb.String()
}

// releaseSite makes root/releases/<name> for each name; root has no
// symlinks in its path.
func releaseSite(t *testing.T, names ...string) string {
	t.Helper()
	root, err := filepath.EvalSymlinks(t.TempDir())
	require.NoError(t, err)
	for _, n := range names {
		require.NoError(t, os.MkdirAll(filepath.Join(root, "releases", n), 0o755))
	}
	return root
}

func readlink(t *testing.T, path string) string {
	t.Helper()
	s, err := os.Readlink(path)
	require.NoError(t, err)
	return s
}

func TestActivateCommand(t *testing.T) {
	root := releaseSite(t, "A", "B")
	cur := filepath.Join(root, "current")
	rel := func(n string) string { return filepath.Join(root, "releases", n) }

	code, out, errs := runCmd(nil, "activate", rel("A"), "--link", cur)
	require.Equal(t, 0, code, errs)
	assert.Equal(t, "previous: (none)\ncurrent: releases/A\n", out)

	code, out, errs = runCmd(nil, "activate", "--link", cur, "--allow-root", filepath.Join(root, "releases"), rel("B"))
	require.Equal(t, 0, code, errs)
	assert.Equal(t, "previous: releases/A\ncurrent: releases/B\n", out)
	assert.Equal(t, "releases/B", readlink(t, cur))
	assert.Equal(t, "releases/A", readlink(t, cur+".previous"))

	code, out, _ = runCmd(nil, "activate", rel("B"), "--link", cur)
	assert.Equal(t, 0, code)
	assert.Equal(t, "current: releases/B (already active; nothing changed)\n", out)

	// The environment names the link, as for the daemon's flags.
	code, out, errs = runCmd(map[string]string{"INCPATHD_LINK": cur}, "activate", "--rollback")
	require.Equal(t, 0, code, errs)
	assert.Equal(t, "previous: releases/B\ncurrent: releases/A\n", out)
	assert.Equal(t, "releases/A", readlink(t, cur))

	code, _, errs = runCmd(map[string]string{"INCPATHD_ALLOW_ROOT": rel("A")}, "activate", rel("B"), "--link", cur)
	assert.Equal(t, 1, code)
	assert.Contains(t, errs, "outside allowed roots")
	assert.Equal(t, "releases/A", readlink(t, cur))
}

func TestActivateCommandRefuses(t *testing.T) {
	root := releaseSite(t, "A")
	cur := filepath.Join(root, "current")
	require.NoError(t, os.Mkdir(cur, 0o755))

	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"activate", filepath.Join(root, "releases", "A")}, 2, "--link is required"},
		{[]string{"activate", "--link", cur}, 2, "exactly one RELEASE"},
		{[]string{"activate", "--link", cur, "a", "b"}, 2, "exactly one RELEASE"},
		{[]string{"activate", "--rollback", "--link", cur, "a"}, 2, "--rollback takes no RELEASE"},
		{[]string{"activate", "--link", cur, "--allow-root", "releases", "a"}, 2, "--allow-root"},
		{[]string{"activate", "--link", cur, "--nope", "a"}, 2, "nope"},
		{[]string{"activate", "--link", cur, filepath.Join(root, "releases", "A")}, 1, "is a directory"},
		{[]string{"activate", "--link", filepath.Join(root, "other"), filepath.Join(root, "releases", "Z")}, 1, "does not exist"},
		{[]string{"activate", "--link", filepath.Join(root, "other"), filepath.Join(root, "other")}, 1, "is the link"},
		{[]string{"activate", "--rollback", "--link", filepath.Join(root, "other")}, 1, "no previous release"},
	} {
		code, out, errs := runCmd(nil, tt.args...)
		assert.Equal(t, tt.code, code, "%v: %s", tt.args, errs)
		assert.Contains(t, errs, tt.want, "%v", tt.args)
		assert.Empty(t, out, "%v", tt.args)
	}
	fi, err := os.Lstat(cur)
	require.NoError(t, err)
	assert.True(t, fi.IsDir(), "the real directory is left alone")

	code, _, errs := runCmd(nil, "activate", "--help")
	assert.Equal(t, 0, code)
	assert.Contains(t, errs, "--rollback")
}

// A mistyped or unknown subcommand is refused, never taken for the daemon.
func TestUnknownCommandStartsNoDaemon(t *testing.T) {
	for _, args := range [][]string{{"activat", "/srv/x"}, {"drian", "/srv/x"}, {"--listen", "127.0.0.1:0", "extra"}} {
		done := make(chan int, 1)
		var errb testsupport.LogBuffer
		go func() { done <- run(context.Background(), args, func(string) string { return "" }, &errb, &errb, nil) }()
		select {
		case code := <-done:
			assert.Equal(t, 2, code, "%v", args)
			assert.Contains(t, errb.String(), "unknown command or stray argument", "%v", args)
		case <-time.After(10 * time.Second):
			t.Fatalf("%v: still running: it started a daemon", args)
		}
	}
}

// Processes activating one link at once (8 × 10, each a separate incpathd
// process): every call succeeds, and after all of them the link names a
// release, its record names another, and no temporary link is left.
func TestActivateCommandConcurrentProcesses(t *testing.T) {
	names := []string{"A", "B", "C", "D"}
	root := releaseSite(t, names...)
	cur := filepath.Join(root, "current")
	var dirs []string
	for _, n := range names {
		dirs = append(dirs, filepath.Join(root, "releases", n))
	}
	const procs, each = 8, 10
	var wg sync.WaitGroup
	errs := make(chan string, procs*each)
	for p := range procs {
		wg.Go(func() {
			for i := range each {
				cmd := selfAsIncpathd("activate", "--link", cur, dirs[(p+i)%len(dirs)])
				if out, err := cmd.CombinedOutput(); err != nil {
					errs <- fmt.Sprintf("process %d call %d: %v: %s", p, i, err, out)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	now, err := filepath.EvalSymlinks(cur)
	require.NoError(t, err)
	assert.Contains(t, dirs, now)
	prev, err := filepath.EvalSymlinks(cur + ".previous")
	require.NoError(t, err)
	assert.Contains(t, dirs, prev)
	assert.NotEqual(t, now, prev)
	ents, err := os.ReadDir(root)
	require.NoError(t, err)
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	assert.Equal(t, []string{"current", "current.previous", "releases"}, slices.Sorted(slices.Values(got)))
}
