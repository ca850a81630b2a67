package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
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

	"github.com/incpathd/incpathd/internal/testenv"
	"github.com/incpathd/incpathd/internal/testsupport"
)

// execCall is what exec would have replaced the process with.
type execCall struct {
	path      string
	argv, env []string
	dir       string
}

// fakeExecve makes exec record its call instead of replacing the test
// process. Tests that use it must not run in parallel.
func fakeExecve(t *testing.T) *execCall {
	t.Helper()
	got := &execCall{}
	old := execve
	execve = func(path string, argv, env []string, dir string) error {
		*got = execCall{path, argv, env, dir}
		return nil
	}
	t.Cleanup(func() { execve = old })
	return got
}

// realSite is a two-release test site with symlinks resolved in its paths.
func realSite(t *testing.T) *testenv.Site {
	t.Helper()
	s := testenv.NewSite(t, "A", "B")
	for n, dir := range s.Releases {
		real, err := filepath.EvalSymlinks(dir)
		require.NoError(t, err)
		s.Releases[n] = real
	}
	return s
}

func envValue(env []string, name string) (string, bool) {
	for _, kv := range slices.Backward(env) {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return v, true
		}
	}
	return "", false
}

func TestExecPinsPHP(t *testing.T) {
	s := realSite(t)
	got := fakeExecve(t)
	a := s.Releases["A"]
	cur := s.Current

	code, _, errs := runCmd(nil, "exec", "--docroot", cur,
		"--include-path", ".:"+cur+"/include:/usr/share/php",
		"-d", "open_basedir="+cur+":/tmp", "-d", "memory_limit=64M", "-d", "display_errors",
		"--", "/opt/php/bin/php8.2", "bin/job.php", "-d", "x")
	require.Equal(t, 0, code, errs)
	assert.Equal(t, "/opt/php/bin/php8.2", got.path)
	assert.Equal(t, []string{
		"/opt/php/bin/php8.2",
		"-d", `include_path=".:` + a + `/include:/usr/share/php"`,
		"-d", `open_basedir="` + a + `:/tmp"`,
		"-d", "memory_limit=64M",
		"-d", "display_errors",
		"bin/job.php", "-d", "x", // the script's own arguments, untouched
	}, got.argv)
	assert.Equal(t, a, got.dir, "the working directory was not under the link: the release itself")
	_, ok := envValue(got.env, "INCPATHD_DOCROOT")
	assert.False(t, ok, "php gets -d settings, not environment variables")

	// An include_path given with -d replaces --include-path; quotes around
	// it are the php CLI's, not part of the path.
	code, _, errs = runCmd(nil, "exec", "--docroot", cur, "--include-path", "/x",
		"-d", `include_path="`+cur+`/lib"`, "--", "php", "-v")
	require.Equal(t, 0, code, errs)
	assert.Equal(t, []string{"php", "-d", `include_path="` + a + `/lib"`, "-v"}, got.argv)
	assert.True(t, filepath.IsAbs(got.path), "php looked up in PATH: %q", got.path)

	// The flags can come from the daemon's environment: the docroot then
	// defaults to the pattern.
	code, _, errs = runCmd(map[string]string{
		"INCPATHD_SEARCH_REPLACE_PATTERN": cur,
		"INCPATHD_INCLUDE_PATH":           cur + "/include",
	}, "exec", "/opt/php", "x.php")
	require.Equal(t, 0, code, errs)
	assert.Equal(t, []string{"/opt/php", "-d", `include_path="` + a + `/include"`, "x.php"}, got.argv)

	// A value that cannot be written back as an ini string is refused.
	code, _, errs = runCmd(nil, "exec", "--docroot", cur, "-d", `include_path=`+cur+`/a"b`, "--", "php")
	assert.Equal(t, 2, code)
	assert.Contains(t, errs, "include_path")
}

func TestExecWrapperGetsEnvironment(t *testing.T) {
	s := realSite(t)
	got := fakeExecve(t)
	a := s.Releases["A"]
	code, _, errs := runCmd(nil, "exec", "--docroot", s.Current, "--include-path", ".:"+s.Current+"/include",
		"--", "/bin/sh", "-c", "bin/worker")
	require.Equal(t, 0, code, errs)
	assert.Equal(t, []string{"/bin/sh", "-c", "bin/worker"}, got.argv)
	v, _ := envValue(got.env, "INCPATHD_DOCROOT")
	assert.Equal(t, a, v)
	v, _ = envValue(got.env, "INCPATHD_INCLUDE_PATH")
	assert.Equal(t, ".:"+a+"/include", v)

	code, _, errs = runCmd(nil, "exec", "--docroot", s.Current, "-d", "memory_limit=1G", "--", "phpunit")
	assert.Equal(t, 2, code)
	assert.Contains(t, errs, "-d needs a php command")
}

func TestExecUseReadlink(t *testing.T) {
	s := realSite(t)
	got := fakeExecve(t)
	// releases/stable -> B: with --use-readlink only current is read, so
	// the release keeps its stable name.
	require.NoError(t, os.Symlink("B", filepath.Join(s.Root, "releases", "stable")))
	require.NoError(t, os.Remove(s.Current))
	require.NoError(t, os.Symlink("releases/stable", s.Current))
	root, err := filepath.EvalSymlinks(s.Root)
	require.NoError(t, err)

	code, _, errs := runCmd(nil, "exec", "--docroot", s.Current, "--use-readlink", "--include-path", s.Current, "--", "php")
	require.Equal(t, 0, code, errs)
	assert.Equal(t, `include_path="`+root+`/releases/stable"`, got.argv[2])
	code, _, errs = runCmd(nil, "exec", "--docroot", s.Current, "--include-path", s.Current, "--", "php")
	require.Equal(t, 0, code, errs)
	assert.Equal(t, `include_path="`+s.Releases["B"]+`"`, got.argv[2])
}

func TestExecRefuses(t *testing.T) {
	s := realSite(t)
	fakeExecve(t)
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"exec", "--docroot", s.Current}, 2, "no command"},
		{[]string{"exec", "--", "php"}, 2, "--docroot is required"},
		{[]string{"exec", "--search-replace-pattern", "@ROOT@", "--", "php"}, 2, "--docroot is required"},
		{[]string{"exec", "--docroot", s.Root + "/missing", "--", "php"}, 1, "unresolvable"},
		{[]string{"exec", "--docroot", s.Current, "--allow-root", "/nonexistent", "--", "php"}, 1, "outside"},
		{[]string{"exec", "--docroot", s.Current, "--allow-root", "srv", "--", "php"}, 2, "--allow-root"},
		{[]string{"exec", "--docroot", s.Current, "--use-readlink=srv", "--", "php"}, 2, "--use-readlink"},
		{[]string{"exec", "--docroot", s.Current, "--", "no-such-command-incpathd"}, 127, "not found"},
		{[]string{"exec", "--docroot", s.Current, "--bogus", "--", "php"}, 2, "bogus"},
	} {
		code, _, errs := runCmd(nil, tt.args...)
		assert.Equal(t, tt.code, code, "%v: %s", tt.args, errs)
		assert.Contains(t, errs, tt.want, "%v", tt.args)
	}
	code, _, errs := runCmd(nil, "exec", "--help")
	assert.Equal(t, 0, code)
	assert.Contains(t, errs, "INCPATHD_DOCROOT")
}

func TestIsPHP(t *testing.T) {
	for name, want := range map[string]bool{
		"php": true, "/usr/bin/php": true, "php8.2": true, "php82": true, "/opt/remi/php74": true,
		"phpunit": false, "phpstan": false, "php-fpm": false, "/usr/bin/php-cgi": false, "sh": false, "./bin/php-wrapper": false,
	} {
		assert.Equal(t, want, isPHP(name), name)
	}
}

func TestWorkDir(t *testing.T) {
	s := realSite(t)
	a := s.Releases["A"]
	for _, tt := range []struct{ wd, want string }{
		{s.Current, a},
		{s.Current + "/include", a + "/include"},
		{s.Current + "/include/", a + "/include"},
		{a + "/include", a + "/include"}, // in the release already
		{"/", a},
		{s.Releases["B"], a}, // another release: moved into this one
		{s.Root, a},
		{"", a}, // the working directory was deleted
	} {
		got, err := workDir(tt.wd, s.Current, a)
		if assert.NoError(t, err, tt.wd) {
			assert.Equal(t, tt.want, got, tt.wd)
		}
	}
	_, err := workDir(s.Current+"/nope", s.Current, a)
	assert.ErrorContains(t, err, "not in the release")
}

// --- with the real php CLI -------------------------------------------------

// phpLine reads one JSON line that cli.php prints.
type phpLine struct {
	Script      string `json:"script"`
	Include     string `json:"include"`
	IncludeFile string `json:"include_file"`
	Cwd         string `json:"cwd"`
	PID         int    `json:"pid"`
	IncludePath string `json:"include_path"`
}

// cliRun is cli.php running, started by start, with the flip in between
// its two reports.
func cliRun(t *testing.T, s *testenv.Site, cmd *exec.Cmd) (before, after phpLine, state *os.ProcessState) {
	t.Helper()
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr testsupport.LogBuffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill() })
	out := bufio.NewReader(stdout)
	read := func() phpLine {
		line, err := readLineWithin(out, 30*time.Second)
		require.NoError(t, err, "stderr: %s", stderr.String())
		var l phpLine
		require.NoError(t, json.Unmarshal([]byte(line), &l), "%q; stderr: %s", line, stderr.String())
		return l
	}
	before = read()
	require.NoError(t, s.Flip("B"))
	_, err = io.WriteString(stdin, "go\n")
	require.NoError(t, err)
	after = read()
	stdin.Close()
	err = cmd.Wait()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		require.NoError(t, err)
	}
	return before, after, cmd.ProcessState
}

// readLineWithin reads a line, or fails after timeout (the process is
// killed by the test's cleanup then).
func readLineWithin(r *bufio.Reader, timeout time.Duration) (string, error) {
	type res struct {
		s   string
		err error
	}
	ch := make(chan res, 1)
	go func() {
		s, err := r.ReadString('\n')
		ch <- res{s, err}
	}()
	select {
	case r := <-ch:
		return r.s, r.err
	case <-time.After(timeout):
		return "", errors.New("no line within " + timeout.String())
	}
}

// A CLI script that runs across a flip keeps including from the release it
// started in, and its working directory is in that release too. The same
// script run by php directly, with the same settings, switches release
// halfway: the difference is incpathd's.
func TestExecPHPStaysInRelease(t *testing.T) {
	php := testenv.RequireBinary(t, "php")
	s := realSite(t)
	a := s.Releases["A"]
	// Without a realpath cache, as under incpathd's daemon tests: so the
	// pin, not a cache, is what keeps the release.
	settings := []string{"-d", "realpath_cache_size=0"}

	direct := exec.Command(php, append(settings, "-d", "include_path=.:"+s.Current+"/include", "cli.php")...)
	direct.Dir = s.Current
	before, after, _ := cliRun(t, s, direct)
	require.Equal(t, "A", before.Include)
	require.Equal(t, "B", after.Include, "unpinned, the include after the flip comes from the new release")
	require.NoError(t, s.Flip("A"))

	args := append([]string{"exec", "--docroot", s.Current, "--include-path", ".:" + s.Current + "/include"}, settings...)
	cmd := selfAsIncpathd(append(args, "--", php, "../cli.php", "5")...)
	// A shell that cd'd into current/include: PWD names the link.
	cmd.Dir = s.Current + "/include"
	cmd.Env = setEnv(cmd.Env, "PWD", cmd.Dir)
	before, after, state := cliRun(t, s, cmd)

	assert.Equal(t, "A", before.Script)
	assert.Equal(t, "A", before.Include)
	assert.Equal(t, ".:"+a+"/include", before.IncludePath)
	assert.Equal(t, a+"/include", before.Cwd)
	assert.Equal(t, "A", after.Script)
	assert.Equal(t, "A", after.Include, "the include after the flip")
	assert.Equal(t, a+"/include/lib_after.php", after.IncludeFile)
	assert.Equal(t, a+"/include", after.Cwd)
	assert.Equal(t, cmd.Process.Pid, before.PID, "php replaced incpathd: the same process")
	assert.Equal(t, 5, state.ExitCode())
}

func TestExecExitStatus(t *testing.T) {
	php := testenv.RequireBinary(t, "php")
	s := realSite(t)
	cmd := selfAsIncpathd("exec", "--docroot", s.Current, "--", php, "-r", "exit(3);")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "%s", out)
	assert.Equal(t, 3, exit.ExitCode(), "%s", out)

	// A wrapper: no -d, the release in its environment, its status back.
	cmd = selfAsIncpathd("exec", "--docroot", s.Current, "--", "/bin/sh", "-c",
		`test "$INCPATHD_DOCROOT" = "$1" && test "$(pwd -P)" = "$1" && exit 4`, "sh", s.Releases["A"])
	out, err = cmd.CombinedOutput()
	require.ErrorAs(t, err, &exit, "%s", out)
	assert.Equal(t, 4, exit.ExitCode(), "%s", out)
}

// Signals sent to incpathd's pid reach php: it is the same process. With
// pcntl, php's handlers run (SIGUSR1 and carry on, SIGTERM and exit 42);
// without it, php dies of SIGTERM.
func TestExecSignals(t *testing.T) {
	php := testenv.RequireBinary(t, "php")
	s := realSite(t)
	mods, err := exec.Command(php, "-m").Output()
	require.NoError(t, err)
	pcntl := slices.Contains(strings.Fields(string(mods)), "pcntl")
	script := `echo "ready\n"; sleep(60);`
	if pcntl {
		script = `pcntl_async_signals(true);
pcntl_signal(SIGUSR1, function () { echo "got USR1\n"; });
pcntl_signal(SIGTERM, function () { echo "got TERM\n"; exit(42); });
echo "ready\n";
for ($i = 0; $i < 600; $i++) { usleep(100000); }
exit(1);`
	}
	cmd := selfAsIncpathd("exec", "--docroot", s.Current, "--", php, "-r", script)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill() })
	out := bufio.NewReader(stdout)
	line, err := readLineWithin(out, 30*time.Second)
	require.NoError(t, err)
	require.Equal(t, "ready\n", line)

	if pcntl {
		require.NoError(t, cmd.Process.Signal(syscall.SIGUSR1))
		line, err = readLineWithin(out, 30*time.Second)
		require.NoError(t, err)
		assert.Equal(t, "got USR1\n", line)
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	rest, _ := io.ReadAll(out)
	err = cmd.Wait()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	if pcntl {
		assert.Equal(t, "got TERM\n", string(rest))
		assert.Equal(t, 42, exit.ExitCode())
		return
	}
	ws := exit.Sys().(syscall.WaitStatus)
	assert.True(t, ws.Signaled() && ws.Signal() == syscall.SIGTERM, "status %v", ws)
}

// A SIGINT ignored by whoever started incpathd (a shell running it in the
// background, `trap "" INT`) stays ignored in php, as it would without
// incpathd in between; a SIGINT not ignored still kills php.
func TestExecKeepsIgnoredSIGINT(t *testing.T) {
	php := testenv.RequireBinary(t, "php")
	s := realSite(t)
	for _, ignored := range []bool{false, true} {
		trap := ""
		if ignored {
			trap = `trap "" INT; `
		}
		cmd := selfAsIncpathd()
		cmd.Args = []string{"/bin/sh", "-c", trap + `exec "$@"`, "sh", os.Args[0],
			"exec", "--docroot", s.Current, "--", php, "-r", `echo "ready\n"; usleep(500000); echo "survived\n";`}
		cmd.Path = "/bin/sh"
		stdout, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		t.Cleanup(func() { cmd.Process.Kill() })
		out := bufio.NewReader(stdout)
		line, err := readLineWithin(out, 30*time.Second)
		require.NoError(t, err)
		require.Equal(t, "ready\n", line)
		require.NoError(t, cmd.Process.Signal(syscall.SIGINT))
		rest, _ := io.ReadAll(out)
		err = cmd.Wait()
		if ignored {
			assert.NoError(t, err)
			assert.Equal(t, "survived\n", string(rest))
			continue
		}
		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit)
		ws := exit.Sys().(syscall.WaitStatus)
		assert.True(t, ws.Signaled() && ws.Signal() == syscall.SIGINT, "status %v", ws)
	}
}

// Issue #10, item 12: php reads a -d value that starts with a letter or a
// digit as raw INI text, so a line break in it sets more than the one key
// (the control below shows php doing so). exec refuses it, and nothing runs.
func TestExecRefusesLineBreakInDefine(t *testing.T) {
	php := testenv.RequireBinary(t, "php")
	s := realSite(t)
	show := `echo ini_get("memory_limit"), "|", ini_get("error_log"), PHP_EOL;`
	for _, injected := range []string{"memory_limit=64M\nerror_log=INJECTED", "memory_limit=64M\rerror_log=INJECTED"} {
		direct, err := exec.Command(php, "-n", "-d", injected, "-r", show).CombinedOutput()
		require.NoError(t, err, "%s", direct)
		require.Equal(t, "64M|INJECTED\n", string(direct), "php itself takes the second line as a setting")

		cmd := selfAsIncpathd("exec", "--docroot", s.Current, "-d", injected, "--", php, "-n", "-r", show)
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit, "%s", out)
		assert.Equal(t, 2, exit.ExitCode(), "%s", out)
		assert.Contains(t, string(out), "line break")
		assert.NotContains(t, string(out), "INJECTED\n", "php never ran")
	}
}
