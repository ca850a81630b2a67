package rewrite

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestPinValue(t *testing.T) {
	const cur, rel = "/srv/site/current", "/srv/site/releases/B"
	tests := []struct {
		v, pattern, to string
		want           string
		err            error
	}{
		{".:/srv/site/current/include:/usr/share/php", cur, rel, ".:/srv/site/releases/B/include:/usr/share/php", nil},
		// Every occurrence, as Rewrite does, not only the first as incpath did.
		{"/srv/site/current/lib:/srv/site/current", cur, rel, "/srv/site/releases/B/lib:/srv/site/releases/B", nil},
		// A path pattern matches whole components only.
		{"/srv/site/currently:/x/srv/site/current", cur, rel, "/srv/site/currently:/x/srv/site/current", nil},
		// Trailing slashes of the pattern and the docroot are ignored.
		{"/srv/site/current/lib", cur + "/", rel + "/", "/srv/site/releases/B/lib", nil},
		// phar:// paths: a '/' before the pattern is a boundary.
		{"phar:///srv/site/current/app.phar", cur, rel, "phar:///srv/site/releases/B/app.phar", nil},
		// A placeholder pattern matches anywhere.
		{"@DOCROOT@/lib", "@DOCROOT@", rel, "/srv/site/releases/B/lib", nil},
		// An empty pattern replaces nothing.
		{"/srv/site/current/lib", "", rel, "/srv/site/current/lib", nil},
		{"", cur, rel, "", nil},
		{"/x", cur, "releases/B", "", ErrDocroot},
		{"/x", cur, "/srv/../etc", "", ErrDocroot},
		{`C:\php`, cur, rel, "", ErrINIValue},
		{`/srv/"x"`, cur, rel, "", ErrINIValue},
		// The seam of a placeholder replacement can form "${".
		{"@D@{x}", "@D@", "/srv/$", "", ErrINIValue},
	}
	for _, tt := range tests {
		got, err := PinValue(tt.v, tt.pattern, tt.to)
		if tt.err != nil {
			assert.ErrorIs(t, err, tt.err, "PinValue(%q, %q, %q)", tt.v, tt.pattern, tt.to)
			continue
		}
		if assert.NoError(t, err, "PinValue(%q, %q, %q)", tt.v, tt.pattern, tt.to) {
			assert.Equal(t, tt.want, got, "PinValue(%q, %q, %q)", tt.v, tt.pattern, tt.to)
		}
	}
}

func TestEntry(t *testing.T) {
	e, err := Entry("include_path", ".:/srv/a b/include")
	assert.NoError(t, err)
	assert.Equal(t, `include_path=".:/srv/a b/include"`, e)

	for _, v := range []string{`a"b`, `a\b`, "a\nb", "a\x00b", "a${b}"} {
		_, err := Entry("include_path", v)
		assert.ErrorIs(t, err, ErrINIValue, "%q", v)
	}
}
