package testsupport

import (
	"bytes"
	"runtime"
	"sync"
	"testing"
	"time"
)

// LogBuffer collects log output written by several goroutines. Its zero
// value is ready to use.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write implements io.Writer.
func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// pollEvery is how often Eventually checks: often enough that a test waits
// little past the moment cond holds, seldom enough to leave the CPU to what
// it waits for on a loaded machine.
const pollEvery = 5 * time.Millisecond

// Eventually polls cond until it holds, and reports true, or until d has
// passed, and reports whether it held on the last check after d.
func Eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return cond()
		}
		time.Sleep(pollEvery)
	}
	return true
}

// CheckGoroutines fails the test if, at its end, more goroutines run than at
// its start, once they have had a few seconds to finish. Call it first, so
// its clean-up runs after every other one. Tests that use it must not run in
// parallel.
func CheckGoroutines(t testing.TB) {
	t.Helper()
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		if Eventually(5*time.Second, func() bool { return runtime.NumGoroutine() <= base }) {
			return
		}
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Errorf("goroutines: got %d; want at most %d\n%s", runtime.NumGoroutine(), base, buf)
	})
}
