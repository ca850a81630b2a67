package rewrite

import (
	"testing"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/internal/fcgitest"
)

// BenchmarkRewrite pins a 30-param nginx request whose PHP_VALUE carries an
// include_path through the docroot symlink, reusing dst as the proxy does.
func BenchmarkRewrite(b *testing.B) {
	in := nginxParams()
	c := Config{IncludePath: ".:/usr/share/php"}
	dst := make([]fcgi.Pair, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		dst, err = c.Rewrite(dst[:0], in, testFrom, testTo)
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRewriteNoPHPValue pins the same request without PHP_VALUE and
// without a base include_path: only SCRIPT_FILENAME changes.
func BenchmarkRewriteNoPHPValue(b *testing.B) {
	in := nginxParams()
	in = append(in[:21], in[22:]...)
	var c Config
	dst := make([]fcgi.Pair, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		dst, err = c.Rewrite(dst[:0], in, testFrom, testTo)
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRewriteDefaults is what the daemon does against a stock php-fpm
// pool: the request's include_path pinned and every other pinned key sent
// with the pool's value, "", with the Config prepared and dst and the
// buffer reused, as the proxy does.
func BenchmarkRewriteDefaults(b *testing.B) {
	b.Run("php_value", func(b *testing.B) { benchRewriteDefaults(b, nginxParams()) })
	// The web server sends no PHP_VALUE: the one incpathd adds is made
	// once, by Prepare.
	b.Run("none", func(b *testing.B) { benchRewriteDefaults(b, fcgitest.WithoutParam(nginxParams(), "PHP_VALUE")) })
}

func benchRewriteDefaults(b *testing.B, in []fcgi.Pair) {
	cfg := Config{IncludePath: ".:/usr/share/php", Defaults: []Setting{{Key: "open_basedir"}, {Key: "auto_prepend_file"}, {Key: "auto_append_file"}}}
	c := cfg.Prepare()
	dst := make([]fcgi.Pair, 0, 64)
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		var err error
		dst, buf, err = c.RewriteBuffer(dst[:0], in, testFrom, testTo, buf)
		if err != nil {
			b.Fatal(err)
		}
	}
}
