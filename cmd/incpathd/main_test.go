package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/internal/testenv"
	"github.com/incpathd/incpathd/internal/testsupport"
)

// TestMain lets tests run this test binary as incpathd itself
// (INCPATHD_TEST_MAIN=1), so signal handling is tested on a real process.
func TestMain(m *testing.M) {
	if os.Getenv("INCPATHD_TEST_MAIN") == "1" {
		// A process started while this file exists fails after opening its
		// sockets: a successor that cannot come up.
		if marker := os.Getenv("INCPATHD_TEST_FAIL_IF"); marker != "" {
			testHookStarted = func() error {
				if _, err := os.Stat(marker); err == nil {
					return errors.New("test: failing before ready, as asked")
				}
				return nil
			}
		}
		main()
		return
	}
	os.Exit(m.Run())
}

func TestParseDefaults(t *testing.T) {
	c, err := parse(nil, func(string) string { return "" }, &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:9001", c.listen)
	assert.Equal(t, "127.0.0.1:9000", c.up.pools[0].addr)
	assert.Equal(t, []string{"*"}, c.realpathSAPIs)
	assert.Empty(t, c.docrootSAPIs)
	assert.Equal(t, time.Second, c.realpathEvery)
	assert.Equal(t, []string{"include_path", "open_basedir", "auto_prepend_file", "auto_append_file"}, c.pinINI)
	assert.Equal(t, 5, c.maxConns)
	assert.Equal(t, 1<<20, c.maxParamsBytes)
	assert.Equal(t, "", c.useReadlink)
}

func TestParseFlagsAndEnv(t *testing.T) {
	env := map[string]string{
		"INCPATHD_UPSTREAM":          "unix:/run/php/fpm.sock",
		"INCPATHD_LISTEN":            "127.0.0.1:1", // the flag below wins
		"INCPATHD_DOCROOT_SAPI_LIST": "nginx,apache",
		"INCPATHD_REALPATH_EVERY":    "0",
		"INCPATHD_ALLOW_ROOT":        "/srv/a,/srv/b",
	}
	c, err := parse([]string{"--listen", "unix:/run/incpathd.sock", "--use-readlink", "--allow-root", "/srv/c"},
		func(k string) string { return env[k] }, &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, "unix:/run/incpathd.sock", c.listen)
	assert.Equal(t, "unix:/run/php/fpm.sock", c.up.pools[0].addr)
	assert.Equal(t, []string{"nginx", "apache"}, c.docrootSAPIs)
	assert.Equal(t, time.Duration(0), c.realpathEvery)
	assert.Equal(t, "/", c.useReadlink, "--use-readlink without a value reads from /")
	assert.Equal(t, []string{"/srv/c"}, c.allowRoots, "the command line wins over the environment")

	c, err = parse([]string{"--use-readlink=/srv"}, func(string) string { return "" }, &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, "/srv", c.useReadlink)
}

func TestParseRefusesBadValues(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{args: []string{"--log-format", "xml"}, want: "--log-format"},
		{args: []string{"--log-level", "loud"}, want: "--log-level"},
		{args: []string{"--max-conns", "0"}, want: "--max-conns"},
		{args: []string{"--listen-mode", "rwx"}, want: "--listen-mode"},
		{args: []string{"--allow-root", "srv"}, want: "--allow-root"},
		{args: []string{"--use-readlink=srv"}, want: "--use-readlink"},
		{args: []string{"--realpath-every", "soon"}, want: "realpath-every"},
		{env: map[string]string{"INCPATHD_MAX_CONNS": "many"}, want: "INCPATHD_MAX_CONNS (--max-conns)"},
		{args: []string{"--no-such-flag"}, want: "no-such-flag"},
	} {
		_, err := parse(tc.args, func(k string) string { return tc.env[k] }, &bytes.Buffer{})
		if assert.Error(t, err, "%v %v", tc.args, tc.env) {
			assert.Contains(t, err.Error(), tc.want)
		}
	}
}

func TestRunVersionAndHelp(t *testing.T) {
	var out, errb bytes.Buffer
	assert.Equal(t, 0, run(context.Background(), []string{"--version"}, os.Getenv, &out, &errb, nil))
	assert.Equal(t, "incpathd dev\n", out.String())

	out.Reset()
	assert.Equal(t, 0, run(context.Background(), []string{"--help"}, os.Getenv, &out, &errb, nil))
	assert.Contains(t, errb.String(), "--search-replace-pattern")
	assert.Contains(t, errb.String(), "INCPATHD_")

	errb.Reset()
	assert.Equal(t, 2, run(context.Background(), []string{"--max-conns", "-1"}, os.Getenv, &out, &errb, nil))
	assert.Contains(t, errb.String(), "--max-conns")
}

func TestListenUnixSocket(t *testing.T) {
	sock := testenv.FreeSocket(t, "incpathd.sock")
	path := strings.TrimPrefix(sock, "unix:")
	// A stale socket file left by a crash does not stop the start.
	l, err := net.Listen("unix", path)
	require.NoError(t, err)
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()

	addr, _, stop := startIncpathd(t, "--listen", sock, "--listen-mode", "0600")
	assert.Equal(t, path, addr)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	// A second instance on the same live socket is refused.
	var errb bytes.Buffer
	code := run(context.Background(), []string{"--listen", sock}, func(string) string { return "" }, &errb, &errb, nil)
	assert.Equal(t, 1, code)
	assert.Contains(t, errb.String(), "another process")

	stop()
	_, err = os.Stat(path)
	assert.True(t, os.IsNotExist(err), "the socket is removed at exit")
}

// SIGTERM: stop accepting, let the request in flight finish, exit 0.
func TestSIGTERMDrainsInFlight(t *testing.T) {
	site := testenv.NewSite(t, "A", "B")
	fpm := testenv.StartFPM(t, testenv.FPMOptions{})
	listen := testenv.FreeAddr(t)
	cmd := exec.Command(os.Args[0], "--listen", listen, "--upstream", fpm.Addr, "--shutdown-timeout", "10s")
	cmd.Env = append(os.Environ(), "INCPATHD_TEST_MAIN=1")
	var logs testsupport.LogBuffer
	cmd.Stderr = &logs
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", listen)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, 10*time.Second, 10*time.Millisecond)
	nginx := testenv.StartNginx(t, testenv.NginxOptions{Root: site.Current, FastCGIPass: listen})

	type result struct {
		code int
		body string
	}
	res := make(chan result, 1)
	go func() {
		resp, err := nginx.Client().Get(nginx.URL + "/slow.php?ms=1500")
		if err != nil {
			res <- result{body: err.Error()}
			return
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		res <- result{resp.StatusCode, b.String()}
	}()
	time.Sleep(500 * time.Millisecond) // the request is in php-fpm now
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))

	// New connections are refused while the slow one finishes.
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", listen)
		if err == nil {
			c.Close()
		}
		return err != nil
	}, 2*time.Second, 10*time.Millisecond, "still accepting after SIGTERM")

	r := <-res
	assert.Equal(t, 200, r.code, "%s", r.body)
	assert.Contains(t, r.body, "A")
	err := cmd.Wait()
	assert.NoError(t, err, "exit status; log:\n%s", logs.String())
	assert.Contains(t, logs.String(), "shutting down")
}

// Issue #10: "incpathd help" and "incpathd help COMMAND" print what --help
// prints, where it prints it, and exit 0 as it does; before, "help" was taken
// for a stray argument (exit 2).
func TestHelpCommand(t *testing.T) {
	for _, cmd := range []string{"", "serve", "activate", "drain", "exec", "maintenance"} {
		want := []string{"--help"}
		args := []string{"help"}
		if cmd != "" {
			want = []string{cmd, "--help"}
			args = append(args, cmd)
		}
		wantCode, wantOut, wantErr := runCmd(nil, want...)
		require.Equal(t, 0, wantCode, "%v", want)
		require.Contains(t, wantErr, "Usage: incpathd", "%v", want)
		code, out, errs := runCmd(nil, args...)
		assert.Equal(t, wantCode, code, "%v: %s", args, errs)
		assert.Equal(t, wantOut, out, "%v", args)
		assert.Equal(t, wantErr, errs, "%v", args)
	}
	code, _, errs := runCmd(nil, "help", "nope")
	assert.Equal(t, 2, code)
	assert.Contains(t, errs, `unknown command "nope"`)
	assert.Contains(t, errs, "activate, drain, exec")
	code, _, errs = runCmd(nil, "help", "exec", "drain")
	assert.Equal(t, 2, code)
	assert.Contains(t, errs, "one command at most")
}
