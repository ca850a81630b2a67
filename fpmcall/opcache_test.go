package fpmcall

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/internal/testenv"
)

// writeRelease writes n PHP files (and one that does not parse, if bad)
// below dir, dated age ago.
func writeRelease(t *testing.T, dir string, n int, age time.Duration, bad bool) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "lib"), 0o755))
	old := time.Now().Add(-age)
	for i := range n {
		p := filepath.Join(dir, "lib", fmt.Sprintf("f%d.php", i))
		require.NoError(t, os.WriteFile(p, fmt.Appendf(nil, "<?php function f%d() { return %d; }\n", i, i), 0o644))
		require.NoError(t, os.Chtimes(p, old, old))
	}
	if bad {
		p := filepath.Join(dir, "broken.php")
		require.NoError(t, os.WriteFile(p, []byte("<?php function (\n"), 0o644))
		require.NoError(t, os.Chtimes(p, old, old))
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "README.txt"), []byte("not php"), 0o644))
}

// Warm compiles a release into opcache, reports the files that do not
// compile, and the status counts them under their release; invalidate
// marks them wasted without freeing their slots; reset empties opcache at
// the next request.
func TestOpcacheWarmStatusInvalidateReset(t *testing.T) {
	fpm := testenv.StartFPM(t, testenv.FPMOptions{Children: 2, Opcache: true})
	c := start(t, fpm)
	ctx := context.Background()
	site := t.TempDir()
	a, b := filepath.Join(site, "releases", "A"), filepath.Join(site, "releases", "B")
	writeRelease(t, a, 30, time.Hour, true)
	writeRelease(t, b, 5, time.Hour, false)

	st, err := c.OpcacheStatus(ctx, []string{a})
	require.NoError(t, err)
	assert.Equal(t, Usage{}, st.Releases[a])
	assert.EqualValues(t, 2, st.Config.FileUpdateProtection, "opcache's default")
	assert.True(t, st.Config.ValidateTimestamps)

	w, err := c.Warm(ctx, a, 30*time.Second)
	require.NoError(t, err)
	assert.Equal(t, 31, w.Files)
	assert.Equal(t, 30, w.Compiled)
	assert.Equal(t, 1, w.Failed)
	require.Len(t, w.Errors, 1)
	assert.Contains(t, w.Errors[0], "broken.php")
	_, err = c.Warm(ctx, b, 30*time.Second)
	require.NoError(t, err)

	again, err := c.Warm(ctx, a, 30*time.Second)
	require.NoError(t, err)
	assert.Equal(t, 30, again.Cached, "a second warm finds them cached, in shared memory")
	assert.Zero(t, again.Compiled)

	st, err = c.OpcacheStatus(ctx, []string{a})
	require.NoError(t, err)
	assert.EqualValues(t, 30, st.Releases[a].Scripts)
	assert.Positive(t, st.Releases[a].Bytes)
	assert.EqualValues(t, 5, st.Releases[b].Scripts, "a release beside a known one is counted under its own directory")
	keys := st.Keys

	u, err := c.Invalidate(ctx, a)
	require.NoError(t, err)
	assert.EqualValues(t, 30, u.Scripts)
	st, err = c.OpcacheStatus(ctx, []string{a})
	require.NoError(t, err)
	assert.GreaterOrEqual(t, st.WastedMemory, u.Bytes, "invalidated scripts become wasted memory")
	assert.Equal(t, keys, st.Keys, "and keep their hash slots")

	require.NoError(t, c.Reset(ctx))
	// The restart happens at the start of a request that finds no other
	// running: this status call.
	st, err = c.OpcacheStatus(ctx, []string{a})
	require.NoError(t, err)
	assert.EqualValues(t, 1, st.ManualRestarts)
	assert.Zero(t, st.WastedMemory)
	assert.Empty(t, st.Releases[b].Scripts)
	assert.Less(t, st.Keys, keys)
}

// opcache.file_update_protection: a file younger than it is reported, with
// how long to wait, and not compiled.
func TestOpcacheWarmTooNew(t *testing.T) {
	fpm := testenv.StartFPM(t, testenv.FPMOptions{Children: 1, Opcache: true,
		INI: map[string]string{"opcache.file_update_protection": "60"}})
	c := start(t, fpm)
	dir := filepath.Join(t.TempDir(), "A")
	writeRelease(t, dir, 3, 10*time.Second, false)
	w, err := c.Warm(context.Background(), dir, 30*time.Second)
	require.NoError(t, err)
	assert.Equal(t, 3, w.TooNew)
	assert.Zero(t, w.Compiled)
	assert.InDelta(t, 50, w.Wait, 3)
}

// Without opcache, each action says so.
func TestNoOpcache(t *testing.T) {
	for name, o := range map[string]testenv.FPMOptions{
		"not loaded": {Children: 1},
		"disabled":   {Children: 1, Opcache: true, INI: map[string]string{"opcache.enable": "0"}},
	} {
		t.Run(name, func(t *testing.T) {
			c := start(t, testenv.StartFPM(t, o))
			_, err := c.OpcacheStatus(context.Background(), nil)
			require.ErrorIs(t, err, ErrNoOpcache)
			_, err = c.Warm(context.Background(), t.TempDir(), time.Second)
			require.ErrorIs(t, err, ErrNoOpcache)
			assert.ErrorIs(t, c.Reset(context.Background()), ErrNoOpcache)
		})
	}
}

// The default directories: the socket's, systemd's runtime directory; a
// Caller without Dir writes into the first it can.
func TestDefaultDirs(t *testing.T) {
	env := map[string]string{"RUNTIME_DIRECTORY": "/run/incpathd:/run/other"}
	dirs := DefaultDirs("unix:/run/php/php8.2-fpm.sock", func(k string) string { return env[k] })
	require.GreaterOrEqual(t, len(dirs), 2)
	assert.Equal(t, []string{"/run/php", "/run/incpathd"}, dirs[:2])
	assert.NotContains(t, DefaultDirs("127.0.0.1:9000", func(string) string { return "" }), "/run/php")

	good := t.TempDir()
	c := &Caller{Candidates: []string{filepath.Join(t.TempDir(), "missing"), good}}
	require.NoError(t, c.Start())
	defer c.Close()
	assert.Equal(t, good, filepath.Dir(c.Path()))
}
