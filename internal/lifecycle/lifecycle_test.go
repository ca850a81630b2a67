package lifecycle

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSystemdListenersChecksPID(t *testing.T) {
	env := map[string]string{"LISTEN_FDS": "1", "LISTEN_PID": "1"}
	unset := func(k string) error { delete(env, k); return nil }
	getenv := func(k string) string { return env[k] }
	got, err := systemdListeners(Env{Getenv: getenv, Unsetenv: unset, PID: os.Getpid()})
	require.NoError(t, err)
	assert.Empty(t, got, "descriptors meant for another process are left alone")
	assert.Equal(t, "1", env["LISTEN_FDS"], "variables meant for another process are left alone")
	env["LISTEN_PID"] = strconv.Itoa(os.Getpid())
	env["LISTEN_FDS"] = "0"
	got, err = systemdListeners(Env{Getenv: getenv, Unsetenv: unset, PID: os.Getpid()})
	require.NoError(t, err)
	assert.Empty(t, got)
}

func TestWritePIDFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "incpathd.pid")
	require.NoError(t, writePIDFile(path, 1234))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "1234\n", string(b))
	require.NoError(t, writePIDFile(path, 5678))
	b, _ = os.ReadFile(path)
	assert.Equal(t, "5678\n", string(b))
	entries, _ := os.ReadDir(filepath.Dir(path))
	assert.Len(t, entries, 1, "no temporary file left")
	assert.Error(t, writePIDFile(filepath.Join(t.TempDir(), "missing", "x.pid"), 1))
}

// The pid file holds Env.PID, and Close removes it only while it is still
// this process's: a successor's stays.
func TestPIDFileFollowsEnv(t *testing.T) {
	path := filepath.Join(t.TempDir(), "incpathd.pid")
	lc, err := New(Config{PIDFile: path, Env: Env{Getenv: func(string) string { return "" }, PID: 4242}})
	require.NoError(t, err)
	require.NoError(t, lc.Ready())
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "4242\n", string(b))
	require.NoError(t, writePIDFile(path, 4343)) // a successor's
	lc.Close()
	b, err = os.ReadFile(path)
	require.NoError(t, err, "another process's pid file stays")
	assert.Equal(t, "4343\n", string(b))

	lc, err = New(Config{PIDFile: path, Env: Env{Getenv: func(string) string { return "" }, PID: 4343}})
	require.NoError(t, err)
	lc.Close()
	assert.NoFileExists(t, path, "this process's pid file goes")
}
