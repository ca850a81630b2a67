package pin

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/rewrite"
)

// The keys Rewrite has no default for are learned once, before the first
// pinned request, and then sent on every request that does not set them;
// a failed attempt is retried after poolRetry, not on every request.
func TestPoolDefaults(t *testing.T) {
	current, a, _ := siteDirs(t)
	var asked [][]string
	fail := true
	empty := ""
	p := &Pinner{
		Resolver: &Resolver{Every: time.Hour},
		Rewrite:  rewrite.Config{IncludePath: ".:/usr/share/php", Defaults: []rewrite.Setting{{Key: "auto_append_file"}}},
		Logger:   quietLogger(),
		PoolINI: func(_ context.Context, keys []string) (map[string]*string, error) {
			asked = append(asked, keys)
			if fail {
				return nil, errors.New("php-fpm cannot read the script")
			}
			base := current + ":/tmp"
			return map[string]*string{"open_basedir": &base, "auto_prepend_file": &empty}, nil
		},
	}
	pin := func() string {
		return fcgi.Param(mustPin(t, p, nginxParams(current)).Params, "PHP_VALUE")
	}
	inc := `include_path=".:` + a + `/include"`
	assert.Equal(t, inc+"\n"+`auto_append_file=""`+"\nmemory_limit=256M", pin(), "not learned yet")
	assert.Equal(t, [][]string{{"open_basedir", "auto_prepend_file"}}, asked)
	fail = false
	pin()
	assert.Len(t, asked, 1, "no new attempt within poolRetry")

	p.learn.failed.Store(time.Now().Add(-poolRetry).UnixNano())
	want := inc + "\n" + `open_basedir="` + a + `:/tmp"` + "\n" + `auto_prepend_file=""` + "\n" + `auto_append_file=""` + "\nmemory_limit=256M"
	assert.Equal(t, want, pin(), "learned: the pool's values, pinned")
	assert.Equal(t, want, pin())
	assert.Len(t, asked, 2, "learned once")
}

// With a default for every key there is nothing to learn.
func TestPoolDefaultsNothingToLearn(t *testing.T) {
	current, _, _ := siteDirs(t)
	p := &Pinner{
		Resolver: &Resolver{Every: time.Hour},
		Rewrite:  rewrite.Config{PinINI: []string{"include_path"}, IncludePath: "."},
		PoolINI: func(context.Context, []string) (map[string]*string, error) {
			t.Error("PoolINI called")
			return nil, nil
		},
	}
	mustPin(t, p, nginxParams(current))
}

// A worker may still hold what an earlier incpathd process pinned it to,
// before a restart: a path in another release. Learned so, it is unpinned
// back to the pattern and pinned to each request's own release.
func TestPoolDefaultsUnpinsAnEarlierPin(t *testing.T) {
	current, a, _ := siteDirs(t)
	releases := filepath.Dir(a)
	old := releases + "/Z/lib:/tmp:" + releases + "/Y"
	p := &Pinner{
		Resolver: &Resolver{Every: time.Hour},
		Rewrite:  rewrite.Config{PinINI: []string{"open_basedir"}},
		Logger:   quietLogger(),
		PoolINI: func(context.Context, []string) (map[string]*string, error) {
			return map[string]*string{"open_basedir": &old}, nil
		},
	}
	out := mustPin(t, p, nginxParams(current)).Params
	assert.Equal(t, []rewrite.Setting{{Key: "open_basedir", Value: current + "/lib:/tmp:" + current}}, p.learn.cfg.Load().cfg.Defaults)
	assert.Contains(t, fcgi.Param(out, "PHP_VALUE"), `open_basedir="`+a+`/lib:/tmp:`+a+`"`)
}

func TestUnpinValue(t *testing.T) {
	for _, tt := range []struct{ v, want string }{
		{"", ""},
		{".:/usr/share/php", ".:/usr/share/php"},
		{"/srv/site/releases/A", "/srv/site/current"},
		{".:/srv/site/releases/A/vendor:/srv/site/releases", ".:/srv/site/current/vendor:/srv/site/releases"},
		{"/srv/site/releases-old/A", "/srv/site/releases-old/A"},
		{"/srv/site/releases/", "/srv/site/releases/"},
	} {
		assert.Equal(t, tt.want, unpinValue(tt.v, "/srv/site/current", "/srv/site/releases"), "unpinValue(%q)", tt.v)
	}
}
