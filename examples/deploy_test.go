// Package examples holds deploy recipes; its tests run them against
// temporary sites with the incpathd built from this tree.
package examples

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/control"
	"github.com/incpathd/incpathd/inflight"
	"github.com/incpathd/incpathd/internal/testenv"
)

// script runs deploy.sh with incpathd as bin and the extra environment.
func script(t *testing.T, bin, site, src string, env ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("bash", "deploy.sh", site, src)
	cmd.Env = slices.Concat(os.Environ(), []string{"INCPATHD=" + bin}, env)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func readlink(t *testing.T, path string) string {
	t.Helper()
	s, err := os.Readlink(path)
	require.NoError(t, err)
	return s
}

func entries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// newSource makes the code a deploy copies.
func newSource(t *testing.T) string {
	t.Helper()
	src := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(src, "index.php"), []byte("<?php echo 'hello';\n"), 0o644))
	return src
}

// startDaemon runs the built incpathd as a daemon with a control endpoint
// until the test ends, and returns its listen address and the environment
// that points incpathd drain (run by deploy.sh) at it.
func startDaemon(t *testing.T, bin string, args ...string) (listen string, env []string) {
	t.Helper()
	listen = testenv.FreeAddr(t)
	ctl := testenv.FreeSocket(t, "control.sock")
	var logs strings.Builder
	cmd := exec.Command(bin, append([]string{"--listen", listen, "--control", ctl}, args...)...)
	cmd.Stderr = &logs
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		<-exited
		if t.Failed() {
			t.Logf("incpathd log:\n%s", logs.String())
		}
	})
	require.Eventually(t, func() bool {
		c, err := net.Dial("unix", strings.TrimPrefix(ctl, "unix:"))
		if err == nil {
			c.Close()
		}
		return err == nil
	}, 10*time.Second, 20*time.Millisecond, "the daemon's control endpoint")
	return listen, []string{"INCPATHD_CONTROL=" + ctl}
}

// TestDeploy runs deploy.sh with the incpathd built from this tree, built
// once for all its cases.
func TestDeploy(t *testing.T) {
	bin := testenv.BuildIncpathd(t)
	t.Run("Script", func(t *testing.T) { testDeployScript(t, bin) })
	t.Run("Drains", func(t *testing.T) { testDeployScriptDrains(t, bin) })
	t.Run("WaitsForRequests", func(t *testing.T) { testDeployScriptWaitsForRequests(t, bin) })
}

func testDeployScript(t *testing.T, bin string) {
	src := newSource(t)
	site := filepath.Join(t.TempDir(), "site")
	cur := filepath.Join(site, "current")
	_, env := startDaemon(t, bin)
	env = append(env, "KEEP=3", `BUILD=echo "$RELEASE_NAME" > release.txt`)

	var want []string
	for i := 1; i <= 5; i++ {
		name := "r0" + string(rune('0'+i))
		out, err := script(t, bin, site, src, append(env, "RELEASE="+name)...)
		require.NoError(t, err, out)
		assert.Contains(t, out, name+" is live")
		assert.Equal(t, "releases/"+name, readlink(t, cur))
		b, err := os.ReadFile(filepath.Join(cur, "release.txt"))
		require.NoError(t, err)
		assert.Equal(t, name+"\n", string(b), "the build ran in the release")
		assert.FileExists(t, filepath.Join(cur, "index.php"))
		want = append(want, name)
		if len(want) > 3 {
			want = want[1:]
		}
		assert.Equal(t, want, entries(t, filepath.Join(site, "releases")), "after %s", name)
		if i > 1 {
			assert.Equal(t, "releases/r0"+string(rune('0'+i-1)), readlink(t, cur+".previous"))
			assert.Equal(t, []string{"current", "current.previous", "releases"}, entries(t, site), "nothing else left in the site")
		}
	}

	// A failed build leaves the site as it was and no release behind.
	out, err := script(t, bin, site, src, append(env, "RELEASE=r06", "BUILD=exit 7")...)
	assert.Error(t, err, out)
	assert.Contains(t, out, "removing the unfinished release r06")
	assert.Equal(t, "releases/r05", readlink(t, cur))
	assert.Equal(t, []string{"r03", "r04", "r05"}, entries(t, filepath.Join(site, "releases")))

	// An existing name is refused before anything is touched.
	out, err = script(t, bin, site, src, append(env, "RELEASE=r04")...)
	assert.Error(t, err)
	assert.Contains(t, out, "exists already")
	assert.Equal(t, "releases/r05", readlink(t, cur))
	assert.FileExists(t, filepath.Join(site, "releases", "r04", "index.php"))

	// After a rollback the rollback target is older than the others; it is
	// still never pruned.
	rb, err := exec.Command(bin, "activate", "--rollback", "--link", cur).CombinedOutput()
	require.NoError(t, err, "%s", rb)
	assert.Equal(t, "previous: releases/r05\ncurrent: releases/r04\n", string(rb))
	out, err = script(t, bin, site, src, append(env, "RELEASE=r07", "KEEP=2")...)
	require.NoError(t, err, out)
	assert.Equal(t, "releases/r07", readlink(t, cur))
	assert.Equal(t, "releases/r04", readlink(t, cur+".previous"))
	assert.Equal(t, []string{"r04", "r05", "r07"}, entries(t, filepath.Join(site, "releases")))

	// Refusals of the script itself.
	out, err = script(t, bin, site, src, append(env, "RELEASE=r08", "KEEP=1")...)
	assert.Error(t, err)
	assert.Contains(t, out, "KEEP=1")
	out, err = script(t, bin, site, src, append(env, "RELEASE=../x")...)
	assert.Error(t, err)
	assert.Contains(t, out, "bad release name")
	out, err = script(t, filepath.Join(t.TempDir(), "missing"), site, src, env...)
	assert.Error(t, err)
	assert.Contains(t, out, "set INCPATHD")

	// One deploy at a time: the site is locked while one runs.
	d, err := os.Open(filepath.Join(site, "releases"))
	require.NoError(t, err)
	defer d.Close()
	require.NoError(t, syscall.Flock(int(d.Fd()), syscall.LOCK_EX))
	out, err = script(t, bin, site, src, append(env, "RELEASE=r09")...)
	assert.Error(t, err)
	assert.Contains(t, out, "another deploy")
	assert.NoDirExists(t, filepath.Join(site, "releases", "r09"))
	assert.Equal(t, "releases/r07", readlink(t, cur))
}

// The recipe's side of the drain contract, with a stand-in for incpathd
// drain that logs its calls and fails for one release: each pruned release
// is drained by its real path with the timeout given, deleted only once the
// drain succeeds, and kept (deploy still succeeding) when it does not.
func testDeployScriptDrains(t *testing.T, bin string) {
	dir := t.TempDir()
	log := filepath.Join(dir, "drain.log")
	fake := filepath.Join(dir, "incpathd")
	require.NoError(t, os.WriteFile(fake, []byte(`#!/usr/bin/env bash
if [ "$1" = drain ]; then
  echo "$*" >>"$DRAIN_LOG"
  if [ -n "${DRAIN_FAIL:-}" ] && [ "${2##*/}" = "$DRAIN_FAIL" ]; then
    echo "incpathd drain: timed out" >&2
    exit 1
  fi
  exit 0
fi
exec "$REAL_INCPATHD" "$@"
`), 0o755))
	src := newSource(t)
	root, err := filepath.EvalSymlinks(dir)
	require.NoError(t, err)
	site := filepath.Join(root, "site")
	rel := func(n string) string { return filepath.Join(site, "releases", n) }
	env := []string{"KEEP=2", "DRAIN_TIMEOUT=7s", "DRAIN_LOG=" + log, "REAL_INCPATHD=" + bin}
	drained := func() []string {
		b, err := os.ReadFile(log)
		if os.IsNotExist(err) {
			return nil
		}
		require.NoError(t, err)
		return strings.Split(strings.TrimSpace(string(b)), "\n")
	}

	for _, n := range []string{"r01", "r02", "r03"} {
		out, err := script(t, fake, site, src, append(env, "RELEASE="+n)...)
		require.NoError(t, err, out)
	}
	assert.Equal(t, []string{"drain " + rel("r01") + " --timeout 7s"}, drained())
	assert.Equal(t, []string{"r02", "r03"}, entries(t, filepath.Join(site, "releases")))

	// A release still in use is kept; the deploy itself succeeds.
	out, err := script(t, fake, site, src, append(env, "RELEASE=r04", "DRAIN_FAIL=r02")...)
	require.NoError(t, err, out)
	assert.Contains(t, out, "r02 may still be in use")
	assert.Equal(t, []string{"r02", "r03", "r04"}, entries(t, filepath.Join(site, "releases")))
	assert.Equal(t, "releases/r04", readlink(t, filepath.Join(site, "current")))

	// The next deploy drains it again, and the one that fell out of the
	// kept set meanwhile.
	out, err = script(t, fake, site, src, append(env, "RELEASE=r05")...)
	require.NoError(t, err, out)
	assert.Equal(t, []string{
		"drain " + rel("r01") + " --timeout 7s",
		"drain " + rel("r02") + " --timeout 7s",
		"drain " + rel("r02") + " --timeout 7s",
		"drain " + rel("r03") + " --timeout 7s",
	}, drained())
	assert.Equal(t, []string{"r04", "r05"}, entries(t, filepath.Join(site, "releases")))
}

// The Deployer recipe is valid PHP (Deployer itself is not installed here).
func TestDeployerRecipeParses(t *testing.T) {
	php := testenv.RequireBinary(t, "php")
	out, err := exec.Command(php, "-l", "deployer.php").CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "No syntax errors")
}

// The whole recipe against real nginx → incpathd → php-fpm: a release with
// a request in flight is deleted only after the request ends. slow.php
// sleeps, then reads release.txt next to itself: deleted under it, the page
// comes out empty.
func testDeployScriptWaitsForRequests(t *testing.T, bin string) {
	src := testenv.NewSite(t, "src").Releases["src"] // the test site's PHP files
	root, err := filepath.EvalSymlinks(t.TempDir())
	require.NoError(t, err)
	site := filepath.Join(root, "site")
	cur := filepath.Join(site, "current")
	env := []string{"KEEP=2", "DRAIN_TIMEOUT=60s", `BUILD=echo "$RELEASE_NAME" > release.txt`}
	deploy := func(name string) string {
		t.Helper()
		out, err := script(t, bin, site, src, append(env, "RELEASE="+name)...)
		require.NoError(t, err, out)
		return out
	}
	deploy("r01")
	deploy("r02")

	fpm := testenv.StartFPM(t, testenv.FPMOptions{Opcache: true})
	listen, ctl := startDaemon(t, bin, "--upstream", fpm.Addr, "--max-conns", "4", "--search-replace-pattern", cur,
		"--pool-probe-dir", t.TempDir())
	env = append(env, ctl...)
	nginx := testenv.StartNginx(t, testenv.NginxOptions{Root: cur, FastCGIPass: listen})

	type result struct {
		code int
		body string
	}
	res := make(chan result, 1)
	go func() {
		code, body := nginx.Get(t, "/slow.php?ms=3000")
		res <- result{code, body}
	}()
	c := &control.Client{Addr: strings.TrimPrefix(ctl[0], "INCPATHD_CONTROL=")}
	defer c.Close()
	require.Eventually(t, func() bool {
		st, err := c.Status(t.Context())
		return err == nil && slices.ContainsFunc(st.Releases, func(r inflight.Release) bool {
			return r.Path == filepath.Join(site, "releases", "r02") && r.InFlight > 0
		})
	}, 20*time.Second, 20*time.Millisecond, "the slow request in flight on r02")

	out := deploy("r03") // r01 goes at once: nothing runs there
	assert.Contains(t, out, "deleted r01")
	// Warmed before the flip, every file of the test site compiled.
	assert.Regexp(t, `warm: .*/r03: (\d+) PHP files, \d+ compiled, \d+ already cached, 0 skipped`, out)
	assert.NotContains(t, out, "activating anyway")
	out = deploy("r04") // r02 goes once the slow request is done
	assert.Contains(t, out, "draining r02")
	assert.Contains(t, out, "deleted r02")
	r := <-res
	assert.Equal(t, 200, r.code, r.body)
	assert.Equal(t, "r02\n", r.body, "the request kept its release to the end")
	assert.Equal(t, []string{"r03", "r04"}, entries(t, filepath.Join(site, "releases")))
	assert.Equal(t, "releases/r04", readlink(t, cur))
}
