package rewrite

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fcgi"
)

// A pinned value that grows past one FastCGI record is refused, never cut
// short: a short pattern used many times in include_path, replaced by a
// long release path. Up to the limit it is sent whole.
func TestRewriteTooLarge(t *testing.T) {
	const from = "/s"
	in := func(n int) []fcgi.Pair {
		return []fcgi.Pair{
			{Name: "DOCUMENT_ROOT", Value: from},
			{Name: "PHP_VALUE", Value: `include_path="` + strings.Repeat(from+"/lib:", n) + `."`},
		}
	}
	to := "/" + strings.Repeat("r", 998) // 999 bytes
	// PHP_VALUE becomes include_path="<n × (999+5)>." : 17 + 1004n bytes.
	// PHP_VALUE is 9 bytes, the value's length takes 4 bytes, its name's 1.
	fits := (fcgi.MaxContent - 14 - 17) / 1004

	out, err := (&Config{}).Rewrite(nil, in(fits), from, to)
	require.NoError(t, err)
	v := value(t, out, "PHP_VALUE")
	assert.Equal(t, `include_path="`+strings.Repeat(to+"/lib:", fits)+`."`, v)
	assert.LessOrEqual(t, fcgi.PairSize(fcgi.Pair{Name: "PHP_VALUE", Value: v}), fcgi.MaxContent)

	out, err = (&Config{}).Rewrite(nil, in(fits+1), from, to)
	require.ErrorIs(t, err, ErrTooLarge)
	require.ErrorIs(t, err, fcgi.ErrParamTooLarge, "the proxy answers fcgi.ErrParamTooLarge with 400")
	assert.Contains(t, err.Error(), "PHP_VALUE")
	assert.Empty(t, out)

	// SCRIPT_FILENAME grows by the difference between the docroots.
	script := from + "/" + strings.Repeat("x", fcgi.MaxContent-len("SCRIPT_FILENAME")-5-len(from)-1-len(to)+len(from))
	_, err = (&Config{}).Rewrite(nil, []fcgi.Pair{{Name: "DOCUMENT_ROOT", Value: from}, {Name: "SCRIPT_FILENAME", Value: script}}, from, to)
	require.NoError(t, err)
	_, err = (&Config{}).Rewrite(nil, []fcgi.Pair{{Name: "DOCUMENT_ROOT", Value: from}, {Name: "SCRIPT_FILENAME", Value: script + "x"}}, from, to)
	require.ErrorIs(t, err, ErrTooLarge)
	assert.Contains(t, err.Error(), "SCRIPT_FILENAME")
}

// Many PHP_VALUE params of many short entries: merging them must take
// linear time (each entry asks whether a later param sets its key), or a
// request of a megabyte would hold a CPU for minutes.
func TestManyDuplicateEntriesLinear(t *testing.T) {
	in := []fcgi.Pair{{Name: "DOCUMENT_ROOT", Value: "/srv/current"}}
	for i := range 16 {
		var b strings.Builder
		for j := range 6000 {
			fmt.Fprintf(&b, "k%d_%d=1\n", i, j) // set by no other param
		}
		in = append(in, fcgi.Pair{Name: "PHP_VALUE", Value: b.String()})
	}
	done := make(chan error, 1)
	go func() {
		_, err := (&Config{}).Rewrite(nil, in, "/srv/current", "/srv/releases/A")
		done <- err
	}()
	select {
	case err := <-done:
		require.ErrorIs(t, err, ErrTooLarge, "the merged value is over one record")
	case <-time.After(30 * time.Second):
		t.Fatal("Rewrite still running after 30 s")
	}
}
