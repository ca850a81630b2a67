package rewrite

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fcgi"
)

// RewriteBuffer gives what Rewrite gives, and reuses its buffer from one
// call to the next: once it is large enough, pinning allocates nothing.
func TestRewriteBuffer(t *testing.T) {
	c := Config{IncludePath: ".:/usr/share/php"}
	want, err := c.Rewrite(nil, nginxParams(), testFrom, testTo)
	require.NoError(t, err)

	var buf []byte
	dst := make([]fcgi.Pair, 0, 64)
	for range 3 {
		dst, buf, err = c.RewriteBuffer(dst[:0], nginxParams(), testFrom, testTo, buf)
		require.NoError(t, err)
		assert.Equal(t, want, dst)
	}
	require.NotZero(t, cap(buf))

	// A buffer large enough is written in place, not replaced.
	array := &buf[:1][0]
	dst, buf, err = c.RewriteBuffer(dst[:0], nginxParams(), testFrom, testTo, buf)
	require.NoError(t, err)
	assert.Same(t, array, &buf[:1][0])
	// A small one is replaced.
	small := make([]byte, 0, 1)
	_, got, err := c.RewriteBuffer(dst[:0], nginxParams(), testFrom, testTo, small)
	require.NoError(t, err)
	assert.NotSame(t, &small[:1][0], &got[:1][0])

	if !raceEnabled {
		in := nginxParams()
		allocs := testing.AllocsPerRun(100, func() {
			dst, buf, err = c.RewriteBuffer(dst[:0], in, testFrom, testTo, buf)
			if err != nil {
				panic(err)
			}
		})
		assert.Zero(t, allocs, "allocations per RewriteBuffer with a buffer large enough")
	}
}

// A refused request leaves the buffer as it was.
func TestRewriteBufferError(t *testing.T) {
	var c Config
	buf := []byte("keep")
	in := append(nginxParams(), fcgi.Pair{Name: "SCRIPT_FILENAME", Value: testFrom + "/../etc/passwd"})
	_, got, err := c.RewriteBuffer(nil, in, testFrom, testTo, buf)
	require.ErrorIs(t, err, ErrUnsafePath)
	assert.Equal(t, "keep", string(got))
}
