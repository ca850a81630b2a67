package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/internal/testenv"
)

// TestRuntimeDefaults runs the built command as users do, with nothing set,
// and with the settings that leave the runtime to Go: the serving process
// must be the one started (the exec keeps the pid), and its environment and
// log must show the runtime it got.
func TestRuntimeDefaults(t *testing.T) {
	exe := filepath.Join(t.TempDir(), "incpathd")
	buildIncpathd(t, exe, "runtime")
	var base []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GOMAXPROCS=") && !strings.HasPrefix(kv, "GODEBUG=") && !strings.HasPrefix(kv, "INCPATHD_") {
			base = append(base, kv)
		}
	}
	goDefault := strconv.Itoa(runtime.NumCPU())
	for _, tc := range []struct {
		name        string
		args, env   []string
		procs       string
		godebug     string // in the serving process's environment
		godebugSeen bool
	}{
		{"nothing set", nil, nil, "1", sysmonAwake, true},
		{"GOMAXPROCS and a schedtrace", nil, []string{"GOMAXPROCS=2", "GODEBUG=schedtrace=0"}, "2", "schedtrace=0", true},
		// Before the fix the started process saw the first of two GODEBUGs,
		// without schedtrace, and started again for ever.
		{"another GODEBUG setting", nil, []string{"GODEBUG=gctrace=1"}, "1", "gctrace=1," + sysmonAwake, true},
		{"left to Go", []string{"--gomaxprocs", "0", "--sysmon-awake=false"}, nil, goDefault, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "incpathd.pid")
			cmd := exec.Command(exe, append([]string{"--listen", testenv.FreeAddr(t), "--pid-file", pidFile}, tc.args...)...)
			cmd.Env = append(append([]string{}, base...), tc.env...)
			fam := startFamily(t, cmd, pidFile)
			require.Equal(t, cmd.Process.Pid, fam.waitPID(0))
			b, err := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/environ")
			require.NoError(t, err)
			var got []string
			for kv := range strings.SplitSeq(string(b), "\x00") {
				if v, ok := strings.CutPrefix(kv, "GODEBUG="); ok {
					got = append(got, v)
				}
			}
			if tc.godebugSeen {
				assert.Equal(t, []string{tc.godebug}, got)
			} else {
				assert.Empty(t, got)
			}
			// The line comes before the pid file, once, from the serving
			// process.
			log := fam.log()
			require.Equal(t, 1, strings.Count(log, `msg="go runtime"`), log)
			line := log[strings.Index(log, `msg="go runtime"`):]
			line = line[:strings.IndexByte(line, '\n')+1]
			assert.Contains(t, line, "gomaxprocs="+tc.procs+" ", line)
			// The re-exec through /proc/self/exe must not leave the
			// process named "exe" for pgrep, pkill and systemd.
			comm, err := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/comm")
			require.NoError(t, err)
			assert.Equal(t, "incpathd\n", string(comm))
		})
	}
}
