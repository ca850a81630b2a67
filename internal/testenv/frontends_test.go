package testenv

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestFill(t *testing.T) {
	s, err := fill("listen 80; root /var/www/site/current; # /var/www/site", "listen 80;", "listen 127.0.0.1:8080;", "/var/www/site", "/tmp/x/site")
	require.NoError(t, err)
	assert.Equal(t, "listen 127.0.0.1:8080; root /tmp/x/site/current; # /tmp/x/site", s)

	_, err = fill("listen 8080;", "listen 80;", "x")
	assert.ErrorContains(t, err, `"listen 80;" does not occur`)
	_, err = fill("abc", "a")
	assert.Error(t, err, "odd arguments")
	// Pairs apply in order: a later old string is looked for in the text as
	// the earlier pairs left it.
	_, err = fill("a", "a", "b", "a", "c")
	assert.Error(t, err)
}

func TestReadModuleFile(t *testing.T) {
	assert.Contains(t, ReadModuleFile(t, "go.mod"), "module github.com/incpathd/incpathd")
}

func TestAllowTraverse(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	require.NoError(t, os.MkdirAll(dir, 0o700))
	tmp, err := filepath.EvalSymlinks(os.TempDir())
	require.NoError(t, err)
	real, err := filepath.EvalSymlinks(dir)
	require.NoError(t, err)
	before := map[string]os.FileMode{}
	for d := real; d != tmp; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		require.NoError(t, err)
		before[d] = fi.Mode().Perm()
	}
	require.GreaterOrEqual(t, len(before), 4, "TestX/001/a/b")
	AllowTraverse(t, dir)
	for d, mode := range before {
		fi, err := os.Stat(d)
		require.NoError(t, err)
		assert.Equal(t, mode|0o001, fi.Mode().Perm(), "%s: o+x added, nothing else", d)
	}
	fi, err := os.Stat(tmp)
	require.NoError(t, err)
	assert.Equal(t, os.ModeSticky|0o777, fi.Mode()&(os.ModeSticky|0o777), "the temporary directory itself is left alone")

	assert.ErrorContains(t, allowTraverse("/usr"), "not inside")
}

func TestParseCGI(t *testing.T) {
	r, err := parseCGI([]byte("Status: 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\nbusy\n"))
	require.NoError(t, err)
	assert.Equal(t, 503, r.Status)
	assert.Equal(t, "text/plain", r.Header.Get("Content-Type"))
	assert.Equal(t, "busy\n", string(r.Body))

	r, err = parseCGI([]byte("Content-type: text/html; charset=UTF-8\n\npong"))
	require.NoError(t, err)
	assert.Equal(t, 200, r.Status, "no Status header")
	assert.Equal(t, "pong", string(r.Body))

	_, err = parseCGI([]byte("Status: abc\r\n\r\n"))
	assert.ErrorContains(t, err, "bad Status")
	_, err = parseCGI(nil)
	assert.Error(t, err, "no output")
}

// A site in front of php-fpm directly, through each web server, from a
// configuration of the kind the examples hold; then nothing is left of the
// server once the test ends.
func TestWebServers(t *testing.T) {
	for _, tt := range []struct {
		name  string
		start func(t *testing.T, s *Site, fpm string) *WebServer
	}{
		{"apache", func(t *testing.T, s *Site, fpm string) *WebServer {
			AllowTraverse(t, s.Root)
			return StartApache(t, ApacheOptions{Site: func(addr string) string {
				return fmt.Sprintf(`<VirtualHost %s>
    DocumentRoot %s
    DirectoryIndex index.php
    <Directory %s>
        Require all granted
    </Directory>
    <FilesMatch "\.php$">
        SetHandler "proxy:fcgi://%s"
    </FilesMatch>
</VirtualHost>`, addr, s.Current, s.Root, fpm)
			}})
		}},
		{"lighttpd", func(t *testing.T, s *Site, fpm string) *WebServer {
			host, port, err := net.SplitHostPort(fpm)
			require.NoError(t, err)
			return StartLighttpd(t, LighttpdOptions{DocumentRoot: s.Current, Conf: func(string) string {
				return fmt.Sprintf(`fastcgi.server = ( ".php" => (( "host" => %q, "port" => %s )) )`, host, port)
			}})
		}},
		{"caddy", func(t *testing.T, s *Site, fpm string) *WebServer {
			return StartCaddy(t, CaddyOptions{Site: func(addr string) string {
				_, port, _ := net.SplitHostPort(addr)
				return fmt.Sprintf(":%s {\n\tbind 127.0.0.1\n\troot * %s\n\tphp_fastcgi %s\n}\n", port, s.Current, fpm)
			}})
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var group []int
			t.Run("serve", func(t *testing.T) {
				s := NewSite(t)
				fpm := StartFPM(t, FPMOptions{Children: 2})
				w := tt.start(t, s, fpm.Addr)
				code, body := w.Get(t, "/index.php/x?y=1")
				require.Equal(t, http.StatusOK, code, "%s\n%s", body, w.Log())
				var r IndexReport
				require.NoError(t, json.Unmarshal([]byte(body), &r), body)
				assert.Equal(t, "A", r.Release)
				assert.Equal(t, "/x", deref(r.PathInfo))
				code, _ = w.Get(t, "/")
				assert.Equal(t, http.StatusOK, code, "index.php is the index")
				require.NotZero(t, w.PID())
				group = anyInGroup(w.PID())
				require.NotEmpty(t, group)
			})
			for _, pid := range group {
				_, alive := readStat(pid)
				assert.False(t, alive, "process %d left over", pid)
			}
		})
	}
}

// LateInclude catches a request that mixes releases: straight from nginx to
// php-fpm, without a realpath cache, the include after the flip comes from
// the new release, and so does DOCUMENT_ROOT, while the script and the
// first include are from the old one.
func TestLateIncludeSeesFlip(t *testing.T) {
	st := startStack(t, FPMOptions{Children: 1, INI: map[string]string{"realpath_cache_size": "0"}}, NginxOptions{})
	get := HTTPGet(st.nginx.Client(), st.nginx.URL)
	assert.Equal(t, "A A A A", LateInclude(t, get, func() {}))
	assert.Equal(t, "A A B B", LateInclude(t, get, func() { require.NoError(t, st.site.Flip("B")) }))
}

// A worker user other than root: nginx's workers run as that user.
func TestStartNginxServerUser(t *testing.T) {
	if !isRoot() {
		t.Skip("worker users need root")
	}
	s := NewSite(t)
	require.NoError(t, os.Chmod(s.Root, 0o700))
	n := StartNginxServer(t, NginxServerOptions{
		User: "nobody",
		Server: func(addr string) string {
			return fmt.Sprintf("server { listen %s; root %s; }", addr, s.Current)
		},
	})
	// nobody cannot enter the site.
	code, _ := n.Get(t, "/release.txt")
	assert.Equal(t, http.StatusForbidden, code)
	// A worker drops root right after the fork, which may come after
	// nginx accepts connections: the request above waited for one.
	workers := n.Workers()
	require.NotEmpty(t, workers)
	for _, pid := range workers {
		uid, err := UID(pid)
		require.NoError(t, err)
		assert.Equal(t, 65534, uid, "worker %d", pid)
	}
}
