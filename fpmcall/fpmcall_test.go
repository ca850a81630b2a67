package fpmcall

import (
	"context"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/internal/testenv"
)

func start(t *testing.T, fpm *testenv.FPM) *Caller {
	t.Helper()
	pool := &fcgi.Pool{Address: fpm.Addr, MaxConns: 1}
	t.Cleanup(func() { pool.Close() })
	c := &Caller{Pool: pool, Dir: t.TempDir()}
	require.NoError(t, c.Start())
	t.Cleanup(func() { c.Close() })
	return c
}

// The pool's own values, from php.ini and from the pool's php_admin_value,
// come back as PHP sees them; unknown keys as nil.
func TestINI(t *testing.T) {
	fpm := testenv.StartFPM(t, testenv.FPMOptions{
		Children: 1,
		INI:      map[string]string{"include_path": ".:/srv/pool/lib"},
		AdminINI: map[string]string{"open_basedir": "/"},
	})
	c := start(t, fpm)
	got, err := c.INI(context.Background(), []string{"include_path", "open_basedir", "auto_prepend_file", "no_such_key"})
	require.NoError(t, err)
	str := func(v *string) any {
		if v == nil {
			return nil
		}
		return *v
	}
	assert.Equal(t, ".:/srv/pool/lib", str(got["include_path"]))
	assert.Equal(t, "/", str(got["open_basedir"]))
	assert.Equal(t, "", str(got["auto_prepend_file"]))
	assert.Nil(t, got["no_such_key"])

	path := c.Path()
	require.NoError(t, c.Close())
	_, err = os.Stat(path)
	assert.True(t, os.IsNotExist(err), "Close removes the script")
	_, err = c.INI(context.Background(), []string{"include_path"})
	assert.ErrorIs(t, err, ErrCall)
}

// Without the secret, the script answers 404 and says nothing: a request
// the web server routes to it cannot use it.
func TestWrongSecret(t *testing.T) {
	fpm := testenv.StartFPM(t, testenv.FPMOptions{Children: 1})
	c := start(t, fpm)
	right := c.secret
	for _, s := range []string{"", "x", right[:len(right)-1]} {
		c.secret = s
		_, err := c.INI(context.Background(), []string{"include_path"})
		require.ErrorIs(t, err, ErrCall, "secret %q", s)
		assert.Contains(t, err.Error(), "404")
	}
	c.secret = right
	_, err := c.INI(context.Background(), []string{"include_path"})
	require.NoError(t, err)
}

// A script php-fpm cannot find is a clear error.
func TestUnreadable(t *testing.T) {
	fpm := testenv.StartFPM(t, testenv.FPMOptions{Children: 1})
	c := start(t, fpm)
	require.NoError(t, os.Remove(c.path))
	_, err := c.INI(context.Background(), []string{"include_path"})
	require.ErrorIs(t, err, ErrCall)
	assert.Contains(t, err.Error(), "readable by php-fpm")
}

// An action the script does not know is an error, not an empty answer.
func TestUnknownAction(t *testing.T) {
	fpm := testenv.StartFPM(t, testenv.FPMOptions{Children: 1})
	c := start(t, fpm)
	_, err := c.call(context.Background(), "nope", nil)
	require.ErrorIs(t, err, ErrCall)
}
