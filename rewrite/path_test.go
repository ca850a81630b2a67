package rewrite

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestCleanRoot(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"/srv/current", "/srv/current", true},
		{"/srv/current//", "/srv/current", true},
		{"/", "", true},
		{"//", "", true},
		{"/srv/..x/y", "/srv/..x/y", true},
		{"", "", false},
		{"srv/current", "", false},
		{"/srv/../etc", "", false},
		{"/srv/..", "", false},
		{"/srv/cur\x00rent", "", false},
	}
	for _, tt := range tests {
		got, ok := cleanRoot(tt.in)
		assert.Equal(t, tt.ok, ok, "cleanRoot(%q) ok", tt.in)
		assert.Equal(t, tt.want, got, "cleanRoot(%q)", tt.in)
	}
}

func TestHasRoot(t *testing.T) {
	tests := []struct {
		p, root string
		want    bool
	}{
		{"/srv/cur", "/srv/cur", true},
		{"/srv/cur/x.php", "/srv/cur", true},
		{"/srv/current/x.php", "/srv/cur", false},
		{"/srv/cu", "/srv/cur", false},
		{"/x.php", "", true},
		{"x.php", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, hasRoot(tt.p, tt.root), "hasRoot(%q, %q)", tt.p, tt.root)
	}
}

func TestReplacer(t *testing.T) {
	tests := []struct {
		pat      string
		boundary bool
		in, want string
	}{
		{"/srv/cur", true, ".:/srv/cur/lib:/srv/current:/srv/cur", ".:/R/lib:/srv/current:/R"},
		{"/srv/cur", true, "/srv/cur/srv/cur", "/R/srv/cur"},
		{"/srv/cur", true, "/srv/curx/srv/cur", "/srv/curx/srv/cur"},
		{"/srv/cur", true, "/x/srv/cur:/srv/cur", "/x/srv/cur:/R"},
		{"/srv/cur", true, "phar:///srv/cur/a.phar", "phar:///R/a.phar"},
		{"/srv/cur", false, "/srv/current", "/Rrent"},
		{"@D@", false, "@D@@D@/x", "/R/R/x"},
		{"", true, "/srv/cur", "/srv/cur"},
	}
	for _, tt := range tests {
		r := replacer{pat: tt.pat, to: "/R", boundary: tt.boundary}
		var b buffer
		r.write(&b, tt.in)
		assert.Equal(t, tt.want, b.String(), "replace %q in %q", tt.pat, tt.in)
		assert.Equal(t, len(tt.want), len(tt.in)+r.count(tt.in)*(len(r.to)-len(r.pat)), "count %q in %q", tt.pat, tt.in)
	}
}
