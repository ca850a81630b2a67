package rewrite

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/internal/fcgitest"
)

// A Prepared pins as its Config does, whether Prepare could write a
// default's entry in advance or not, for requests with and without INI
// params.
func TestPreparedPinsAsConfig(t *testing.T) {
	none := []Setting{{Key: "open_basedir"}, {Key: "auto_prepend_file"}, {Key: "auto_append_file"}}
	configs := map[string]Config{
		"stock pool":                  {IncludePath: ".:/usr/share/php", Defaults: none},
		"include_path only":           {IncludePath: ".:/usr/share/php"},
		"defaults only":               {Defaults: none},
		"include_path in the docroot": {IncludePath: ".:" + testFrom + "/lib", Defaults: none},
		"default in the docroot":      {Defaults: []Setting{{Key: "open_basedir", Value: testFrom + ":/tmp"}}},
		"placeholder pattern":         {SearchReplacePattern: "@D@", IncludePath: "@D@/lib", Defaults: []Setting{{Key: "open_basedir", Value: "/tmp"}}},
		"unwritable default":          {Defaults: []Setting{{Key: "open_basedir", Value: `/a"b`}}},
		"default for an unpinned key": {Defaults: []Setting{{Key: "memory_limit", Value: "1G"}}},
		"repeated default":            {Defaults: []Setting{{Key: "open_basedir", Value: "/a"}, {Key: "open_basedir", Value: "/b"}}},
		"no pinned keys":              {PinINI: []string{}, IncludePath: "."},
	}
	requests := map[string][]fcgi.Pair{
		"nginx":           nginxParams(),
		"no PHP_VALUE":    fcgitest.WithoutParam(nginxParams(), "PHP_VALUE"),
		"PHP_ADMIN_VALUE": append(fcgitest.WithoutParam(nginxParams(), "PHP_VALUE"), fcgi.Pair{Name: "PHP_ADMIN_VALUE", Value: "open_basedir=/x"}),
	}
	for cname, cfg := range configs {
		prepared := cfg.Prepare()
		for rname, in := range requests {
			want, wantErr := cfg.Rewrite(nil, in, testFrom, testTo)
			got, gotErr := prepared.Rewrite(nil, in, testFrom, testTo)
			assert.Equal(t, formatResult(want, wantErr), formatResult(got, gotErr), "%s, %s", cname, rname)
		}
	}
}

// For a request without INI params, the PHP_VALUE of a stock pool's
// defaults is made once, by Prepare, and sent as it is when the request's
// pattern does not occur in it.
func TestPreparedAloneValue(t *testing.T) {
	cfg := Config{IncludePath: ".:/usr/share/php", Defaults: []Setting{{Key: "open_basedir"}, {Key: "auto_append_file", Value: "append.php"}}}
	p := cfg.Prepare()
	assert.Equal(t, `include_path=".:/usr/share/php"`+"\n"+`open_basedir=""`+"\n"+`auto_append_file="append.php"`, p.alone.value)

	in := fcgitest.WithoutParam(nginxParams(), "PHP_VALUE")
	out, err := p.Rewrite(nil, in, testFrom, testTo)
	require.NoError(t, err)
	assert.Equal(t, fcgi.Pair{Name: "PHP_VALUE", Value: p.alone.value}, out[len(out)-1])

	// A value that holds the docroot is pinned, as always.
	cfg.IncludePath = ".:" + testFrom + "/lib"
	out, err = cfg.Prepare().Rewrite(nil, in, testFrom, testTo)
	require.NoError(t, err)
	assert.Equal(t, fcgi.Pair{Name: "PHP_VALUE", Value: `include_path=".:` + testTo + `/lib"` + "\n" + `open_basedir=""` + "\n" + `auto_append_file="append.php"`}, out[len(out)-1])
}
