package testsupport

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestLogBufferConcurrent(t *testing.T) {
	var l LogBuffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				fmt.Fprintf(&l, "w%d\n", i)
				_ = l.String()
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, 800, strings.Count(l.String(), "\n"))
}

func TestEventually(t *testing.T) {
	var n atomic.Int32
	assert.True(t, Eventually(5*time.Second, func() bool { return n.Add(1) >= 3 }))
	assert.Equal(t, int32(3), n.Load(), "stops polling once cond holds")

	start := time.Now()
	assert.False(t, Eventually(50*time.Millisecond, func() bool { return false }))
	assert.GreaterOrEqual(t, time.Since(start), 50*time.Millisecond, "waits the whole time")
}
