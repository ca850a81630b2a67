package testsupport

import (
	"bytes"
	"sync"
	"time"
)

// LogBuffer is an io.Writer that a logger on other goroutines writes to
// while the test reads it. The zero value is empty and ready.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
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
