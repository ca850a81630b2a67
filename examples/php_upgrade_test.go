package examples

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/control"
	"github.com/incpathd/incpathd/internal/testenv"
)

// upgradeScript runs php-upgrade.sh with incpathd as bin and the extra
// environment.
func upgradeScript(t *testing.T, bin string, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("bash", append([]string{"php-upgrade.sh"}, args...)...)
	cmd.Env = slices.Concat(os.Environ(), []string{"INCPATHD=" + bin}, env)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// pidAlive reads a php-fpm pid file and reports whether the master runs.
// A daemonized master that exited stays a zombie of this process, which
// testenv makes the subreaper of what it starts: that counts as gone.
func pidAlive(path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	pid := strings.TrimSpace(string(b))
	stat, err := os.ReadFile("/proc/" + pid + "/stat")
	return err == nil && !strings.Contains(string(stat), ") Z ")
}

// TestPHPUpgrade runs php-upgrade.sh against an incpathd with two real
// php-fpm pools: START and STOP are small scripts around php-fpm that
// stand in for systemctl and the units of deploy/systemd.
func TestPHPUpgrade(t *testing.T) {
	bin := testenv.BuildIncpathd(t)
	fpmBin := testenv.RequireBinary(t, "php-fpm8.2", "php-fpm*", "php-fpm")
	dir := t.TempDir()
	fpms := map[string]*testenv.FPM{}
	var args []string
	for _, name := range []string{"blue", "green"} {
		fpms[name] = testenv.StartFPM(t, testenv.FPMOptions{Children: 2, Listen: "unix:" + filepath.Join(dir, name+".sock")})
		args = append(args, "--upstream", name+"="+fpms[name].Addr)
	}
	fpms["green"].Stop() // green is the idle pool: not running
	pidFile := func(name string) string { return filepath.Join(filepath.Dir(fpms[name].ConfPath), "php-fpm.pid") }
	t.Cleanup(func() {
		for name := range fpms {
			if b, err := os.ReadFile(pidFile(name)); err == nil {
				if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
					syscall.Kill(pid, syscall.SIGTERM)
				}
			}
		}
	})
	root := ""
	if os.Getuid() == 0 {
		root = "--allow-to-run-as-root"
	}
	var startCase, stopCase strings.Builder
	for name, f := range fpms {
		fmt.Fprintf(&startCase, "%s) exec env PHP_INI_SCAN_DIR= %q --fpm-config %q -c %q %s -D ;;\n", name, fpmBin, f.ConfPath, f.INIPath, root)
		fmt.Fprintf(&stopCase, "%s) pid=$(cat %q) ;;\n", name, pidFile(name))
	}
	start := filepath.Join(dir, "start.sh")
	stop := filepath.Join(dir, "stop.sh")
	require.NoError(t, os.WriteFile(start, []byte("#!/bin/sh\ncase $1 in\n"+startCase.String()+"esac\nexit 3\n"), 0o755))
	require.NoError(t, os.WriteFile(stop, []byte("#!/bin/sh\ncase $1 in\n"+stopCase.String()+"*) exit 3 ;;\nesac\n"+
		"kill \"$pid\"\n# Gone, or a zombie of the test (testenv is the subreaper).\n"+
		"for i in $(seq 100); do grep -qv ') Z ' /proc/$pid/stat 2>/dev/null || exit 0; sleep 0.1; done\nexit 1\n"), 0o755))

	_, env := startDaemon(t, bin, append(args, "--pool-probe=false")...)
	env = append(env, "START="+start+" ", "STOP="+stop+" ", "WAIT_TIMEOUT=10s", "READY_TIMEOUT=10")
	ctl := &control.Client{Addr: strings.TrimPrefix(env[0], "INCPATHD_CONTROL=")}
	defer ctl.Close()
	active := func() string {
		u, err := ctl.Upstreams(context.Background())
		require.NoError(t, err)
		return u.Active
	}

	// blue -> green: green is started, blue stopped.
	out, err := upgradeScript(t, bin, env)
	require.NoError(t, err, out)
	assert.Contains(t, out, "new requests go to green (before: blue)")
	assert.Contains(t, out, "green serves; blue is stopped")
	assert.Equal(t, "green", active())
	assert.True(t, pidAlive(pidFile("green")), "green runs")
	assert.Eventually(t, func() bool { return !pidAlive(pidFile("blue")) }, 5*time.Second, 50*time.Millisecond, "blue stopped")

	// And back, naming the pool.
	out, err = upgradeScript(t, bin, env, "blue")
	require.NoError(t, err, out)
	assert.Equal(t, "blue", active())
	assert.True(t, pidAlive(pidFile("blue")), "blue runs")
	assert.False(t, pidAlive(pidFile("green")), "green stopped")

	// A pool that does not start: the active one stays, nothing stopped.
	out, err = upgradeScript(t, bin, append(env, "START=false "))
	require.Error(t, err, out)
	assert.Contains(t, out, "cannot start green; blue stays active")
	assert.Equal(t, "blue", active())
	assert.True(t, pidAlive(pidFile("blue")))

	// A pool that starts but never answers: refused after READY_TIMEOUT.
	out, err = upgradeScript(t, bin, append(env, "START=true ", "READY_TIMEOUT=1"))
	require.Error(t, err, out)
	assert.Contains(t, out, "green does not answer after 1s; blue stays active")
	assert.Equal(t, "blue", active())

	// Usage errors.
	out, err = upgradeScript(t, bin, env, "blue")
	assert.Error(t, err)
	assert.Contains(t, out, "blue is already active")
	out, err = upgradeScript(t, bin, env, "red")
	assert.Error(t, err)
	assert.Contains(t, out, "no pool red")
}
