package pin

import (
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// The steady state: the docroot is cached, as it is for all but one request
// per Every.
func BenchmarkResolveCached(b *testing.B) {
	s := newSite(b)
	r := Resolver{Every: time.Hour}
	if _, err := r.Resolve(s.current); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Resolve(s.current); err != nil {
			b.Fatal(err)
		}
	}
	if r.Resolutions() != 1 {
		b.Fatalf("got %d resolutions; want 1", r.Resolutions())
	}
}

func BenchmarkResolveCachedParallel(b *testing.B) {
	s := newSite(b)
	r := Resolver{Every: time.Hour}
	// A few docroots, as a web server with a few vhosts sends.
	docroots := []string{s.current, s.current + "/public", s.a, s.b}
	for _, d := range docroots {
		if _, err := r.Resolve(d); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := r.Resolve(docroots[i%len(docroots)]); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

// What every request costs without the cache (nginx's $realpath_root, or
// Every zero), for comparison.
func BenchmarkResolveUncached(b *testing.B) {
	s := newSite(b)
	for _, bb := range []struct {
		name string
		r    *Resolver
	}{
		{"realpath", &Resolver{}},
		{"readlink", &Resolver{UseReadlink: true}},
		{"readlink-prefix", &Resolver{UseReadlink: true, ReadlinkPrefix: s.current}},
	} {
		b.Run(bb.name, func(b *testing.B) {
			docroot := filepath.Join(s.current, "public")
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bb.r.Resolve(docroot); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// How soon a watched flip is seen: from the rename's return to the cached
// resolution being gone, plus the resolution and watch that follow it.
func BenchmarkWatchFlipSeen(b *testing.B) {
	s := newSite(b)
	w := &Watcher{}
	r := &Resolver{Every: time.Hour, Watcher: w}
	if err := r.Start(); err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	if _, err := r.Resolve(s.current); err != nil {
		b.Fatal(err)
	}
	targets := []string{filepath.Join("releases", "B"), filepath.Join("releases", "A")}
	var seen time.Duration
	i := 0
	for b.Loop() {
		flip(b, s.current, targets[i%2])
		start := time.Now()
		for r.Len() != 0 {
			runtime.Gosched()
		}
		seen += time.Since(start)
		if _, err := r.Resolve(s.current); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(seen.Nanoseconds())/float64(i), "ns-to-forget/flip")
}
