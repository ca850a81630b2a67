package inflight

import (
	"sync"
	"testing"
)

// The hot path: every request on the active release.
func BenchmarkAcquireDone(b *testing.B) {
	var tr Tracker
	const release = "/srv/www/site/releases/20260101-120000"
	b.ReportAllocs()
	for b.Loop() {
		tr.Acquire(release).Done()
	}
}

func BenchmarkAcquireDoneParallel(b *testing.B) {
	var tr Tracker
	const release = "/srv/www/site/releases/20260101-120000"
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tr.Acquire(release).Done()
		}
	})
}

// The obvious alternative, for comparison: one mutex around a map.
func BenchmarkMutexMapParallel(b *testing.B) {
	var mu sync.Mutex
	m := map[string]int64{}
	const release = "/srv/www/site/releases/20260101-120000"
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			mu.Lock()
			m[release]++
			mu.Unlock()
			mu.Lock()
			m[release]--
			mu.Unlock()
		}
	})
}
