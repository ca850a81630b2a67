// Package scripts holds the shell scripts of the repository; its tests run
// scripts/demo.sh as make demo does, with real nginx and php-fpm, and hold
// it to the story it tells.
package scripts

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/internal/testenv"
)

// demo is one run of demo.sh in its own process group, with a temporary
// directory of its own as TMPDIR.
type demo struct {
	cmd    *exec.Cmd
	tmpdir string
	lines  chan string // stdout, line by line; closed at EOF
	stderr bytes.Buffer
	out    []string // the lines read so far
}

// requireDemoBinaries fails under CI=true, and skips elsewhere, when what
// the demo starts is missing.
func requireDemoBinaries(t *testing.T) {
	t.Helper()
	testenv.RequireBinary(t, "bash")
	testenv.RequireBinary(t, "nginx")
	testenv.RequireBinary(t, "php-fpm8.2", "php-fpm*", "php-fpm")
	testenv.RequireBinary(t, "curl")
}

func startDemo(t *testing.T, bin string) *demo {
	t.Helper()
	// Short, and outside t.TempDir(), whose long paths would not fit the
	// demo's unix sockets.
	tmpdir, err := os.MkdirTemp("", "demo")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(tmpdir) })

	d := &demo{tmpdir: tmpdir, lines: make(chan string, 100)}
	d.cmd = exec.Command("bash", "demo.sh")
	d.cmd.Env = append(os.Environ(), "INCPATHD="+bin, "TMPDIR="+tmpdir)
	d.cmd.Stderr = &d.stderr
	// Its own process group, so that what the demo leaves behind can be
	// found by group, and a signal to the group is a terminal's Ctrl-C.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := d.cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, d.cmd.Start())
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			d.lines <- s.Text()
		}
		close(d.lines)
	}()
	// A test that stops early kills the script's group and php-fpm's.
	t.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			groups := d.groups(t)
			for g := range groups {
				syscall.Kill(-g, syscall.SIGKILL)
			}
			d.cmd.Wait()
		}
	})
	return d
}

// readUntil reads stdout until a line contains s, within timeout.
func (d *demo) readUntil(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case line, ok := <-d.lines:
			if !ok {
				t.Fatalf("demo.sh ended without a line containing %q:\n%s\nstderr:\n%s", s, strings.Join(d.out, "\n"), d.stderr.String())
			}
			d.out = append(d.out, line)
			if strings.Contains(line, s) {
				return
			}
		case <-deadline:
			t.Fatalf("no line containing %q from demo.sh in %v:\n%s", s, timeout, strings.Join(d.out, "\n"))
		}
	}
}

// holdFlip makes the demo wait at its flip, with the slow requests asleep
// on A, until the returned function is called: it takes the lock that
// `incpathd activate` takes on the link's directory (flock(2), see package
// release) as soon as the site exists, which is before any server starts.
// Call it right after startDemo.
func (d *demo) holdFlip(t *testing.T) (release func()) {
	t.Helper()
	var site string
	require.Eventually(t, func() bool {
		m, _ := filepath.Glob(filepath.Join(d.tmpdir, "incpathd-demo.*", "site"))
		if len(m) == 1 {
			site = m[0]
		}
		return site != ""
	}, time.Minute, time.Millisecond, "the demo's site")
	f, err := os.Open(site)
	require.NoError(t, err)
	require.NoError(t, syscall.Flock(int(f.Fd()), syscall.LOCK_EX))
	d.readUntil(t, "includes first.php, sleeps", time.Minute)
	target, err := os.Readlink(filepath.Join(site, "current"))
	require.NoError(t, err)
	require.Equal(t, "releases/A", target, "the flip happened before the lock was taken")
	var once sync.Once
	release = func() { once.Do(func() { f.Close() }) }
	t.Cleanup(release)
	return release
}

// wait reads stdout to its end and waits for the script to exit, within
// timeout.
func (d *demo) wait(t *testing.T, timeout time.Duration) *os.ProcessState {
	t.Helper()
	deadline := time.After(timeout)
	for done := false; !done; {
		select {
		case line, ok := <-d.lines:
			if !ok {
				done = true
				break
			}
			d.out = append(d.out, line)
		case <-deadline:
			t.Fatalf("demo.sh still running, or its output still open, after %v:\n%s", timeout, strings.Join(d.out, "\n"))
		}
	}
	err := d.cmd.Wait()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatal(err)
	}
	return d.cmd.ProcessState
}

// proc is a process as /proc shows it.
type proc struct {
	pgid    int
	comm    string // the executable's name
	cmdline string // argv joined by spaces; php-fpm writes its title there
}

func procs(t *testing.T) []proc {
	t.Helper()
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	require.NoError(t, err)
	var ps []proc
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces and parens.
		i := bytes.LastIndexByte(b, ')')
		j := bytes.IndexByte(b, '(')
		if i < 0 || j < 0 || j > i {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 3 {
			continue
		}
		pgid, err := strconv.Atoi(f[2])
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join(filepath.Dir(path), "cmdline"))
		ps = append(ps, proc{pgid: pgid, comm: string(b[j+1 : i]),
			cmdline: strings.TrimSpace(string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))})
	}
	return ps
}

// groups returns the process groups of the running demo: the script's, and
// those of processes that name its temporary directory on their command
// line. php-fpm starts a session of its own, -F or not.
func (d *demo) groups(t *testing.T) map[int]bool {
	t.Helper()
	groups := map[int]bool{d.cmd.Process.Pid: true}
	for _, p := range procs(t) {
		if strings.Contains(p.cmdline, d.tmpdir) {
			groups[p.pgid] = true
		}
	}
	return groups
}

// in returns the names of the processes in groups.
func in(t *testing.T, groups map[int]bool) []string {
	t.Helper()
	var names []string
	for _, p := range procs(t) {
		if groups[p.pgid] {
			names = append(names, p.comm)
		}
	}
	return names
}

// assertRunning checks that the demo's servers run in groups, which
// assertNothingLeft then checks.
func assertRunning(t *testing.T, groups map[int]bool, names ...string) {
	t.Helper()
	running := strings.Join(in(t, groups), " ")
	for _, name := range names {
		assert.Contains(t, running, name, "the demo runs it")
	}
}

// assertNothingLeft checks that no process of groups remains and that the
// demo's temporary directory is gone.
func (d *demo) assertNothingLeft(t *testing.T, groups map[int]bool) {
	t.Helper()
	assert.Eventually(t, func() bool { return len(in(t, groups)) == 0 }, 5*time.Second, 50*time.Millisecond,
		"processes of the demo still running")
	if left := in(t, groups); len(left) > 0 {
		t.Errorf("left running: %v", left)
		// Stop them, so that a failed run leaves nothing behind either.
		for _, p := range procs(t) {
			if groups[p.pgid] {
				syscall.Kill(-p.pgid, syscall.SIGKILL)
			}
		}
	}
	ents, err := os.ReadDir(d.tmpdir)
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	assert.Empty(t, names, "left in TMPDIR")
}

// rowRE matches a row of the demo's table: what, the releases of the
// script, of first.php and of second.php, and the verdict.
var rowRE = regexp.MustCompile(`^ {4}(started before the flip|started after the flip|after rm -rf releases/A) +(\S+) +(\S+) +(\S+) +(.+)$`)

// eventRE matches a line of the demo's timeline: the time since the slow
// requests started, then what happened.
var eventRE = regexp.MustCompile(`^ +\d+\.\d\d s  (.*)$`)

// table reads the rows of the demo's output as "chain: what" → "script
// first second: verdict".
func table(lines []string) map[string]string {
	rows := map[string]string{}
	chain := ""
	for _, line := range lines {
		switch strings.TrimSpace(line) {
		case "nginx $realpath_root -> php-fpm", "nginx -> incpathd -> php-fpm":
			chain = strings.TrimSpace(line)
			continue
		}
		if m := rowRE.FindStringSubmatch(line); m != nil {
			rows[chain+": "+m[1]] = m[2] + " " + m[3] + " " + m[4] + ": " + m[5]
		}
	}
	return rows
}

// TestDemo runs demo.sh and checks what it shows: the slow request through
// nginx alone mixes A's script and first include with B's second one,
// through incpathd it stays on A; the requests after the flip run on B;
// drain waits for the request on A, and B serves on after A is deleted.
// Then nothing of the demo is left.
func TestDemo(t *testing.T) {
	requireDemoBinaries(t)
	bin := testenv.BuildIncpathd(t)

	start := time.Now()
	d := startDemo(t, bin)
	flip := d.holdFlip(t)
	groups := d.groups(t)
	assertRunning(t, groups, "nginx", "php-fpm", "incpathd", "curl")
	flip()
	st := d.wait(t, 2*time.Minute)
	took := time.Since(start)
	out := strings.Join(d.out, "\n")
	require.True(t, st.Success(), "demo.sh: %v\nstdout:\n%s\nstderr:\n%s", st, out, d.stderr.String())
	t.Logf("demo.sh took %v, the test's hold at the flip included:\n%s", took.Round(time.Millisecond), out)
	assert.Empty(t, d.stderr.String(), "demo.sh wrote to stderr")

	assert.Equal(t, map[string]string{
		"nginx $realpath_root -> php-fpm: started before the flip": "A A B: MIXED",
		"nginx $realpath_root -> php-fpm: started after the flip":  "B B B: one release",
		"nginx -> incpathd -> php-fpm: started before the flip":    "A A A: one release",
		"nginx -> incpathd -> php-fpm: started after the flip":     "B B B: one release",
		"nginx -> incpathd -> php-fpm: after rm -rf releases/A":    "B B B: one release",
	}, table(d.out), "the table of releases:\n%s", out)

	// The events, in the order they happened.
	var events []string
	for _, line := range d.out {
		if m := eventRE.FindStringSubmatch(line); m != nil {
			events = append(events, m[1])
		}
	}
	assert.Equal(t, []string{
		"slow.php starts on A through both chains, includes first.php, sleeps",
		"incpathd activate releases/B: current -> releases/B",
		"slow.php again through both chains, started after the flip",
		"incpathd drain: waiting for releases/A: 1 request in flight on releases/A",
		"the slow requests wake up, include second.php and answer",
		"incpathd drain returned 0: releases/A is drained",
		"rm -rf releases/A",
	}, events, "the timeline:\n%s", out)
	require.GreaterOrEqual(t, len(d.out), 2)
	assert.Equal(t, []string{
		"Without incpathd the request in flight answered with code from both releases.",
		"Through incpathd each request ran in the release it started in; A was deleted once drained.",
	}, d.out[len(d.out)-2:], "the closing lines")
	assert.NotContains(t, out, "\x1b[", "colour without a terminal")
	d.assertNothingLeft(t, groups)
}

// TestDemoInterrupt stops demo.sh with SIGINT while the slow requests sleep,
// all servers up (held at the flip). Sent to the script alone, its trap must
// stop everything; sent to the whole group, as Ctrl-C on a terminal does,
// too: php-fpm, in a session of its own, never gets that one. Either way the
// script dies of SIGINT, as make expects of an interrupted command, and
// leaves no process and no file.
func TestDemoInterrupt(t *testing.T) {
	requireDemoBinaries(t)
	bin := testenv.BuildIncpathd(t)
	for _, tc := range []struct {
		name string
		pid  func(pid int) int
	}{
		{"script", func(pid int) int { return pid }},
		{"group", func(pid int) int { return -pid }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := startDemo(t, bin)
			flip := d.holdFlip(t)
			groups := d.groups(t)
			assertRunning(t, groups, "nginx", "php-fpm", "incpathd", "curl")
			entries, err := os.ReadDir(d.tmpdir)
			require.NoError(t, err)
			require.Len(t, entries, 1, "the demo's temporary directory")

			require.NoError(t, syscall.Kill(tc.pid(d.cmd.Process.Pid), syscall.SIGINT))
			// The script waits for incpathd activate, which waits for the
			// lock: bash runs its trap once that command returns.
			flip()
			st := d.wait(t, time.Minute)
			ws, ok := st.Sys().(syscall.WaitStatus)
			require.True(t, ok)
			assert.True(t, ws.Signaled() && ws.Signal() == syscall.SIGINT,
				"demo.sh should die of SIGINT, got %v; stderr:\n%s", st, d.stderr.String())
			d.assertNothingLeft(t, groups)
		})
	}
}
