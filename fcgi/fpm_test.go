package fcgi

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/internal/testenv"
)

// Upstream requests get a new request id each (Conn.NextID), which php-fpm
// 8.2 takes on a kept connection and answers under: here ten requests on
// one connection to one worker, across the wrap from 65535 back to 1.
func TestFPMAnswersEveryRequestID(t *testing.T) {
	site := testenv.NewSite(t, "A")
	fpm := testenv.StartFPM(t, testenv.FPMOptions{Children: 1})
	p := &Pool{Address: fpm.Addr, MaxConns: 1}
	defer p.Close()
	c, reused, err := p.Get(context.Background())
	require.NoError(t, err)
	require.False(t, reused)
	c.id = 65530
	var ids []uint16
	for range 10 {
		// RoundTrip takes the next id and fails on a record under any
		// other; one under the previous id would be skipped but leave the
		// connection out of step, which the Idle count below would show.
		var out Collector
		_, err := c.RoundTrip(context.Background(), &Call{KeepConn: true, Params: []Pair{
			{"SCRIPT_FILENAME", site.Current + "/index.php"},
			{"DOCUMENT_ROOT", site.Current},
			{"REQUEST_METHOD", "GET"},
			{"SCRIPT_NAME", "/index.php"},
		}}, &out)
		id := c.id
		ids = append(ids, id)
		require.NoError(t, err, "request id %d", id)
		assert.Contains(t, string(out.Stdout), `"release":"A"`, "request id %d", id)
	}
	assert.Equal(t, []uint16{65531, 65532, 65533, 65534, 65535, 1, 2, 3, 4, 5}, ids)
	p.Put(c)
	assert.Equal(t, 1, p.Stats().Idle, "kept: nothing came after END_REQUEST")
	assert.Equal(t, uint64(1), p.Stats().Dials)
}
