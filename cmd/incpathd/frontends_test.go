package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/internal/testenv"
	"github.com/incpathd/incpathd/internal/testsupport"
	"github.com/incpathd/incpathd/pin"
)

// Every front end, for real, in front of incpathd and a real php-fpm, each
// configured by its example file under examples/ as it stands: the tests
// fill in ports and paths and nothing else (testenv.Fill fails when a value
// it replaces is no longer in the file).

// Values the example files hold, replaced by the tests.
const (
	exampleSite     = "/var/www/site"            // holds releases/ and current
	exampleIncpathd = "127.0.0.1:9001"           // incpathd's --listen default
	exampleFPMSock  = "/run/php/php8.2-fpm.sock" // Debian's php8.2-fpm socket
)

// frontEnd is a web server, or cgi-fcgi, in front of incpathd.
type frontEnd interface {
	// do sends one request for path (with its query) and returns the
	// status and body. It may be called from any goroutine.
	do(method, path, contentType string, body []byte) (int, string, error)
}

// httpFrontEnd is a web server at url.
type httpFrontEnd struct {
	url    string
	client *http.Client
}

func (h httpFrontEnd) do(method, path, contentType string, body []byte) (int, string, error) {
	req, err := http.NewRequest(method, h.url+path, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	if body == nil {
		req.Body, req.ContentLength = nil, 0
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// cgiFrontEnd is cgi-fcgi with the CGI environment a health check or a
// script would set for a request under docroot.
type cgiFrontEnd struct {
	c       *testenv.CGIFCGI
	docroot string
	env     []string // added to every request
}

func (c cgiFrontEnd) do(method, path, contentType string, body []byte) (int, string, error) {
	r, err := c.c.Do(c.params(method, path, contentType, len(body)), body)
	if err != nil {
		return 0, "", err
	}
	return r.Status, string(r.Body), nil
}

// params are the CGI/1.1 variables for a request of path, split at ".php"
// as the web servers here do.
func (c cgiFrontEnd) params(method, path, contentType string, n int) []string {
	uri, query, _ := strings.Cut(path, "?")
	script, pathInfo := uri, ""
	if i := strings.Index(uri, ".php/"); i >= 0 {
		script, pathInfo = uri[:i+len(".php")], uri[i+len(".php"):]
	}
	env := []string{
		"GATEWAY_INTERFACE=CGI/1.1",
		"SERVER_PROTOCOL=HTTP/1.1",
		"REQUEST_METHOD=" + method,
		"REQUEST_URI=" + path,
		"QUERY_STRING=" + query,
		"DOCUMENT_ROOT=" + c.docroot,
		"SCRIPT_NAME=" + script,
		"SCRIPT_FILENAME=" + c.docroot + script,
		"CONTENT_LENGTH=" + strconv.Itoa(n),
		"CONTENT_TYPE=" + contentType,
	}
	if pathInfo != "" {
		env = append(env, "PATH_INFO="+pathInfo, "PATH_TRANSLATED="+c.docroot+pathInfo)
	}
	return append(env, c.env...)
}

// frontEndCase says how to put one front end in front of incpathd.
type frontEndCase struct {
	// sapi is the name SERVER_SOFTWARE must map to. incpathd runs with only
	// this name in --realpath-sapi-list (or --docroot-sapi-list if trusted):
	// a front end that maps to another name is passed through unpinned, and
	// every pinning assertion fails.
	sapi string
	// product is how the front end's SERVER_SOFTWARE starts.
	product string
	// trusted puts sapi in --docroot-sapi-list instead: the front end sends
	// a resolved DOCUMENT_ROOT.
	trusted bool
	// unix makes incpathd listen on a unix socket; start gets its address
	// as "unix:/path".
	unix bool
	// start starts the front end in front of incpathd at addr.
	start func(t *testing.T, site *testenv.Site, addr string) frontEnd
}

func TestFrontEndNginx(t *testing.T) {
	testFrontEnd(t, frontEndCase{sapi: "nginx", product: "nginx/", start: startNginxExample("examples/nginx/incpathd.conf")})
}

func TestFrontEndNginxRealpathRoot(t *testing.T) {
	testFrontEnd(t, frontEndCase{
		sapi: "nginx", product: "nginx/", trusted: true,
		start: startNginxExample("examples/nginx/incpathd-realpath-root.conf"),
	})
}

func startNginxExample(file string) func(t *testing.T, site *testenv.Site, addr string) frontEnd {
	return func(t *testing.T, site *testenv.Site, addr string) frontEnd {
		example := testenv.ReadModuleFile(t, file)
		n := testenv.StartNginxServer(t, testenv.NginxServerOptions{
			Server: func(listen string) string {
				return testenv.Fill(t, example,
					"listen 80;", "listen "+listen+";",
					exampleSite, site.Root,
					exampleIncpathd, addr)
			},
		})
		return httpFrontEnd{n.URL, n.Client()}
	}
}

func TestFrontEndApache(t *testing.T) {
	testFrontEnd(t, frontEndCase{
		sapi: "apache", product: "Apache/",
		start: func(t *testing.T, site *testenv.Site, addr string) frontEnd {
			example := testenv.ReadModuleFile(t, "examples/apache/incpathd.conf")
			// Apache's children run as nobody under root: they look the
			// scripts up, so they must reach them.
			testenv.AllowTraverse(t, site.Root)
			a := testenv.StartApache(t, testenv.ApacheOptions{
				Site: func(listen string) string {
					return testenv.Fill(t, example,
						"*:80", listen,
						exampleSite, site.Root,
						exampleIncpathd, addr)
				},
			})
			return httpFrontEnd{a.URL, a.Client()}
		},
	})
}

// Over a unix socket, the usual set-up on Debian: mod_proxy_fcgi names the
// worker, not the socket, in SCRIPT_FILENAME ("proxy:fcgi://localhost/...").
func TestFrontEndApacheUnixSocket(t *testing.T) {
	testFrontEnd(t, frontEndCase{
		sapi: "apache", product: "Apache/", unix: true,
		start: func(t *testing.T, site *testenv.Site, addr string) frontEnd {
			example := testenv.ReadModuleFile(t, "examples/apache/incpathd.conf")
			testenv.AllowTraverse(t, site.Root)
			a := testenv.StartApache(t, testenv.ApacheOptions{
				Site: func(listen string) string {
					return testenv.Fill(t, example,
						"*:80", listen,
						exampleSite, site.Root,
						`SetHandler "proxy:fcgi://127.0.0.1:9001"`,
						`SetHandler "proxy:`+addr+`|fcgi://localhost"`)
				},
			})
			return httpFrontEnd{a.URL, a.Client()}
		},
	})
}

func TestFrontEndLighttpd(t *testing.T) {
	testFrontEnd(t, frontEndCase{
		sapi: "lighttpd", product: "lighttpd/",
		start: func(t *testing.T, site *testenv.Site, addr string) frontEnd {
			example := testenv.ReadModuleFile(t, "examples/lighttpd/15-incpathd.conf")
			host, port, err := net.SplitHostPort(addr)
			require.NoError(t, err)
			l := testenv.StartLighttpd(t, testenv.LighttpdOptions{
				DocumentRoot: site.Current,
				Conf: func(string) string {
					return testenv.Fill(t, example,
						`"host" => "127.0.0.1"`, `"host" => "`+host+`"`,
						`"port" => 9001`, `"port" => `+port)
				},
			})
			return httpFrontEnd{l.URL, l.Client()}
		},
	})
}

func TestFrontEndCaddy(t *testing.T) {
	testFrontEnd(t, frontEndCase{
		sapi: "caddy", product: "Caddy/",
		start: func(t *testing.T, site *testenv.Site, addr string) frontEnd {
			example := testenv.ReadModuleFile(t, "examples/caddy/Caddyfile")
			c := testenv.StartCaddy(t, testenv.CaddyOptions{
				Site: func(listen string) string {
					_, port, _ := net.SplitHostPort(listen)
					return testenv.Fill(t, example,
						":80 {", ":"+port+" {\n\tbind 127.0.0.1",
						exampleSite, site.Root,
						exampleIncpathd, addr)
				},
			})
			return httpFrontEnd{c.URL, c.Client()}
		},
	})
}

// cgi-fcgi sends its environment: SERVER_SOFTWARE is what the caller sets.
func TestFrontEndCGIFCGI(t *testing.T) {
	testFrontEnd(t, frontEndCase{
		sapi: "cgi-fcgi", product: "cgi-fcgi/",
		start: func(t *testing.T, site *testenv.Site, addr string) frontEnd {
			return cgiFrontEnd{
				c:       testenv.NewCGIFCGI(t, addr),
				docroot: site.Current,
				env:     []string{"SERVER_SOFTWARE=cgi-fcgi/2.4.2"},
			}
		},
	})
}

// startFrontEndStack starts php-fpm with the example pool lines, incpathd
// and the front end, and returns the site, the front end and incpathd's log.
func startFrontEndStack(t *testing.T, fc frontEndCase) (*testenv.Site, frontEnd, *testsupport.LogBuffer) {
	t.Helper()
	site := testenv.NewSite(t, "A", "B")
	sock := testenv.FreeSocket(t, "php-fpm.sock")
	pool := testenv.Fill(t, testenv.ReadModuleFile(t, "examples/php-fpm/pool.conf"),
		exampleFPMSock, strings.TrimPrefix(sock, "unix:"))
	fpm := testenv.StartFPM(t, testenv.FPMOptions{Listen: sock, Pool: pool, Opcache: true})

	listen := testenv.FreeAddr(t)
	if fc.unix {
		listen = testenv.FreeSocket(t, "incpathd.sock")
		// Apache's children run as nobody under root.
		testenv.AllowTraverse(t, filepath.Dir(strings.TrimPrefix(listen, "unix:")))
	}
	args := []string{
		"--listen", listen,
		"--listen-mode", "0666",
		"--upstream", fpm.Addr,
		"--search-replace-pattern", site.Current,
		"--include-path", ".:" + site.Current + "/include:/usr/share/php",
		"--max-conns", "4",
		"--realpath-every", "0",
		"--log-level", "debug",
		// Confined as a careful set-up is: every front end's SCRIPT_FILENAME
		// must pass the check in the form it sends (Apache's
		// "proxy:fcgi://host:port/path", issue #10 item 5).
		"--allow-root", filepath.Dir(site.Releases["A"]),
	}
	if fc.trusted {
		args = append(args, "--docroot-sapi-list", fc.sapi, "--realpath-sapi-list", "")
	} else {
		args = append(args, "--realpath-sapi-list", fc.sapi)
	}
	addr, log, _ := startIncpathd(t, args...)
	if fc.unix {
		addr = listen // a unix listener's address is its bare path
	}
	return site, fc.start(t, site, addr), log
}

func testFrontEnd(t *testing.T, fc frontEndCase) {
	site, fe, log := startFrontEndStack(t, fc)

	index := func(method, path string, body []byte) testenv.IndexReport {
		t.Helper()
		contentType := ""
		if body != nil {
			contentType = "application/x-www-form-urlencoded"
		}
		code, out, err := fe.do(method, path, contentType, body)
		require.NoError(t, err, "%s %s", method, path)
		require.Equal(t, 200, code, "%s %s: %s\nincpathd log:\n%s", method, path, out, log)
		var r testenv.IndexReport
		require.NoError(t, json.Unmarshal([]byte(out), &r), "%s %s: %q", method, path, out)
		return r
	}

	// The front end's name, as incpathd reads it: pinned only if it maps to
	// fc.sapi, the one name incpathd was told.
	r := index("GET", "/index.php", nil)
	assertPinned(t, site, r, "A")
	if assert.NotNil(t, r.ServerSoftware) {
		assert.True(t, strings.HasPrefix(*r.ServerSoftware, fc.product), "SERVER_SOFTWARE %q", *r.ServerSoftware)
		assert.Equal(t, fc.sapi, pin.Name([]fcgi.Pair{{Name: "SERVER_SOFTWARE", Value: *r.ServerSoftware}}))
	}

	// PATH_INFO style URLs, by GET and by POST.
	for _, method := range []string{"GET", "POST"} {
		var body []byte
		if method == "POST" {
			body = []byte("greeting=hello")
		}
		r = index(method, "/index.php/a/b?x=1", body)
		assertPinned(t, site, r, "A")
		if assert.NotNil(t, r.PathInfo, method) {
			assert.Equal(t, "/a/b", *r.PathInfo, method)
		}
		if assert.NotNil(t, r.PathTranslated, method) {
			assert.Equal(t, site.Releases["A"]+"/a/b", *r.PathTranslated, method)
		}
	}

	// A request body arrives whole.
	const size = 1 << 20
	code, out, err := fe.do("POST", "/echo.php", "application/octet-stream", readAll(t, testenv.PatternReader(size)))
	require.NoError(t, err)
	require.Equal(t, 200, code, "%s", out)
	var echo testenv.EchoReport
	require.NoError(t, json.Unmarshal([]byte(out), &echo), "%q", out)
	assert.Equal(t, int64(size), echo.Length)
	assert.Equal(t, testenv.PatternSHA256(size), echo.SHA256)
	assert.Equal(t, "POST", echo.Method)

	// A flip between two includes of one request: the late include still
	// comes from the release the request started in.
	get := func(path string) (int, string, error) { return fe.do("GET", path, "", nil) }
	line := testenv.LateInclude(t, get, func() { require.NoError(t, site.Flip("B")) })
	assert.Equal(t, "A A A A", line, "script, include, late include, DOCUMENT_ROOT")

	// The next request is pinned to B, whole.
	assertPinned(t, site, index("GET", "/index.php", nil), "B")
	assert.Equal(t, "B B B B", testenv.LateInclude(t, get, func() {}))
}

func readAll(t *testing.T, r io.Reader) []byte {
	t.Helper()
	b, err := io.ReadAll(r)
	require.NoError(t, err)
	return b
}

// A health check through incpathd: cgi-fcgi asks php-fpm's ping page, as a
// container probe would (docker/k8s). With a DOCUMENT_ROOT the request is
// pinned like any other and php-fpm answers it by SCRIPT_NAME.
func TestCGIFCGIPing(t *testing.T) {
	site := testenv.NewSite(t, "A")
	fpm := testenv.StartFPM(t, testenv.FPMOptions{Children: 1})
	addr, _, _ := startIncpathd(t, "--listen", testenv.FreeAddr(t), "--upstream", fpm.Addr)
	c := testenv.NewCGIFCGI(t, addr)
	r := c.Run(t, []string{
		"REQUEST_METHOD=GET",
		"SCRIPT_NAME=/fpm-ping",
		"SCRIPT_FILENAME=" + site.Current + "/fpm-ping",
		"DOCUMENT_ROOT=" + site.Current,
	}, nil)
	assert.Equal(t, 200, r.Status, "%s", r.Body)
	assert.Equal(t, "pong", string(r.Body))
	assert.Zero(t, r.ExitCode)

	// Without DOCUMENT_ROOT there is nothing to pin it to: refused, as the
	// README says, rather than sent on unpinned.
	r = c.Run(t, []string{"REQUEST_METHOD=GET", "SCRIPT_NAME=/fpm-ping", "SCRIPT_FILENAME=/fpm-ping"}, nil)
	assert.Equal(t, 500, r.Status, "%s", r.Body)
	assert.NotContains(t, string(r.Body), "pong")
}
