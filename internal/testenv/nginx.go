package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// NginxOptions configures StartNginx.
type NginxOptions struct {
	// Root is the server's root, usually Site.Current. Required.
	Root string

	// FastCGIPass is where PHP requests go: "host:port" or "unix:/path", for
	// example FPM.Addr. Required.
	FastCGIPass string

	// RealpathRoot sends $realpath_root instead of $document_root in
	// DOCUMENT_ROOT, SCRIPT_FILENAME and PATH_TRANSLATED: nginx resolves the
	// current symlink on every request, the usual recipe without incpathd.
	RealpathRoot bool

	// KeepConn sets fastcgi_keep_conn on and passes requests through an
	// upstream block that keeps Keepalive idle connections per worker.
	// Otherwise every request opens a new connection.
	KeepConn bool

	// Keepalive is the upstream keepalive cache size used with KeepConn.
	// If zero, 8.
	Keepalive int

	// NoTryFiles drops "try_files $fastcgi_script_name =404", the check that
	// the script exists, for setups where nginx cannot see the PHP files.
	NoTryFiles bool

	// ClientMaxBody is client_max_body_size. If empty, "64m".
	ClientMaxBody string

	// Workers is worker_processes. If zero, 1.
	Workers int

	// Extra holds directives added at the end of the PHP location block,
	// for example `fastcgi_param PHP_VALUE "include_path=...";`. A
	// fastcgi_param naming a param set already sends it twice.
	Extra string

	// ServerExtra holds directives added to the server block.
	ServerExtra string

	// Binary is the nginx binary. If empty, RequireBinary looks for nginx.
	Binary string
}

// Nginx is an nginx master process and its workers, started by StartNginx.
type Nginx struct {
	// Addr is the listening address, "127.0.0.1:PORT".
	Addr string
	// URL is "http://" + Addr.
	URL string
	// ErrorLog is nginx's error log; php's stderr output lands there too.
	ErrorLog string
	// ConfPath is the generated nginx.conf.
	ConfPath string

	running
}

// StartNginx writes an nginx.conf into t.TempDir(), runs nginx in the
// foreground with it, and returns once it accepts connections. nginx is
// stopped and waited for when the test ends; if the test failed, the end of
// its error log is logged.
func StartNginx(t testing.TB, o NginxOptions) *Nginx {
	t.Helper()
	if o.Root == "" || o.FastCGIPass == "" {
		t.Fatal("testenv: NginxOptions needs Root and FastCGIPass")
	}
	bin := o.Binary
	if bin == "" {
		bin = RequireBinary(t, "nginx")
	}
	dir := t.TempDir()
	for _, d := range []string{"tmp/body", "tmp/fastcgi", "tmp/proxy", "tmp/scgi", "tmp/uwsgi"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return launchNginx(t, bin, dir, func(addr string) []byte { return nginxConf(&o, dir, addr) })
}

// launchNginx starts nginx in dir with the configuration conf renders for
// a free address, retrying on a new address if another process takes the
// port first; nginx is stopped when the test ends.
func launchNginx(t testing.TB, bin, dir string, conf func(addr string) []byte) *Nginx {
	t.Helper()
	n := &Nginx{
		ErrorLog: filepath.Join(dir, "error.log"),
		ConfPath: filepath.Join(dir, "nginx.conf"),
		running:  newRunning(),
	}
	t.Cleanup(func() {
		n.client.CloseIdleConnections()
		n.Stop()
		if t.Failed() {
			t.Logf("nginx error log %s:\n%s", n.ErrorLog, tail(n.ErrorLog, 4096))
		}
	})
	outPath := filepath.Join(dir, "nginx.out")
	for attempt := 1; ; attempt++ {
		addr, err := freeAddr()
		if err != nil {
			t.Fatal(err)
		}
		n.Addr, n.URL = addr, "http://"+addr
		if err := os.WriteFile(n.ConfPath, conf(addr), 0o644); err != nil {
			t.Fatal(err)
		}
		from := fileSize(n.ErrorLog)
		err = n.start(bin, dir, outPath, from)
		if err == nil {
			return n
		}
		log := readFrom(n.ErrorLog, from)
		if attempt < 5 && bytes.Contains(log, []byte("Address already in use")) {
			continue // someone took the free port first
		}
		t.Fatalf("%v\nnginx error log:\n%s\nnginx output:\n%s", err, log, tail(outPath, 4096))
	}
}

func (n *Nginx) start(bin, dir, outPath string, from int64) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	args := []string{"-p", dir + "/", "-c", n.ConfPath, "-e", n.ErrorLog, "-g", "daemon off;"}
	p, err := startProcess(bin, args, childEnv(), dir, outPath)
	if err != nil {
		return err
	}
	pidFile := filepath.Join(dir, "nginx.pid")
	want := strconv.Itoa(p.pid())
	err = p.waitReady(func() (bool, error) {
		if log := readFrom(n.ErrorLog, from); bytes.Contains(log, []byte("[emerg]")) {
			// nginx retries a failed bind for 2.5 s; give up at once.
			return false, errors.New("testenv: nginx failed to start")
		}
		b, _ := os.ReadFile(pidFile)
		if strings.TrimSpace(string(b)) != want {
			return false, nil // the pid file is written once sockets listen
		}
		c, err := net.DialTimeout("tcp", n.Addr, time.Second)
		if err != nil {
			return false, nil
		}
		c.Close()
		return true, nil
	})
	if err != nil {
		p.stop(syscall.SIGTERM, stopGrace)
		return fmt.Errorf("testenv: nginx on %s: %w", n.Addr, err)
	}
	n.proc = p
	return nil
}

// Get requests n.URL+path and returns the status code and body. A transport
// error fails the test.
func (n *Nginx) Get(t testing.TB, path string) (int, string) {
	t.Helper()
	return do(t, n.client, "GET", n.URL+path, "", nil)
}

// Log returns nginx's error log so far.
func (n *Nginx) Log() string {
	b, _ := os.ReadFile(n.ErrorLog)
	return string(b)
}

// fastcgiParams is Debian's /etc/nginx/fastcgi_params without
// DOCUMENT_ROOT, which nginxConf sets according to RealpathRoot, and
// without the HTTP_HOST override of recent Debian packages.
const fastcgiParams = `fastcgi_param  QUERY_STRING       $query_string;
fastcgi_param  REQUEST_METHOD     $request_method;
fastcgi_param  CONTENT_TYPE       $content_type;
fastcgi_param  CONTENT_LENGTH     $content_length;

fastcgi_param  SCRIPT_NAME        $fastcgi_script_name;
fastcgi_param  REQUEST_URI        $request_uri;
fastcgi_param  DOCUMENT_URI       $document_uri;
fastcgi_param  SERVER_PROTOCOL    $server_protocol;
fastcgi_param  REQUEST_SCHEME     $scheme;
fastcgi_param  HTTPS              $https if_not_empty;

fastcgi_param  GATEWAY_INTERFACE  CGI/1.1;
fastcgi_param  SERVER_SOFTWARE    nginx/$nginx_version;

fastcgi_param  REMOTE_ADDR        $remote_addr;
fastcgi_param  REMOTE_PORT        $remote_port;
fastcgi_param  REMOTE_USER        $remote_user;
fastcgi_param  SERVER_ADDR        $server_addr;
fastcgi_param  SERVER_PORT        $server_port;
fastcgi_param  SERVER_NAME        $server_name;

# PHP only, required if PHP was built with --enable-force-cgi-redirect
fastcgi_param  REDIRECT_STATUS    200;
`

// nginxConf renders nginx.conf: one server on addr with a static location
// and a PHP location in the shape of Debian's snippets/fastcgi-php.conf.
func nginxConf(o *NginxOptions, dir, addr string) []byte {
	root := "$document_root"
	if o.RealpathRoot {
		root = "$realpath_root"
	}
	pass := o.FastCGIPass
	body := o.ClientMaxBody
	if body == "" {
		body = "64m"
	}
	var b strings.Builder
	depth := 0
	// w writes one or more lines, indented by block depth.
	w := func(format string, args ...any) {
		for _, line := range strings.Split(fmt.Sprintf(format, args...), "\n") {
			line = strings.TrimSpace(line)
			if strings.HasPrefix(line, "}") {
				depth--
			}
			if line != "" {
				b.WriteString(strings.Repeat("    ", max(depth, 0)))
			}
			b.WriteString(line + "\n")
			if strings.HasSuffix(line, "{") {
				depth++
			}
		}
	}
	w("# Generated by internal/testenv.")
	if isRoot() {
		// Workers must read the site and the temp directories, which
		// t.TempDir creates mode 0700.
		w("user root;")
	}
	w("worker_processes %d;", max(o.Workers, 1))
	w("pid %s;", filepath.Join(dir, "nginx.pid"))
	w("lock_file %s;", filepath.Join(dir, "nginx.lock"))
	w("error_log %s warn;", filepath.Join(dir, "error.log"))
	w("worker_shutdown_timeout 5s;")
	w("events { worker_connections 1024; }")
	w("http {")
	w("access_log off;")
	for _, d := range []string{"client_body", "fastcgi", "proxy", "scgi", "uwsgi"} {
		sub := strings.TrimPrefix(d, "client_")
		w("%s_temp_path %s;", d, filepath.Join(dir, "tmp", sub))
	}
	w("types { text/html html; text/plain txt; application/json json; }")
	w("default_type application/octet-stream;")
	w("sendfile on;")
	w("keepalive_timeout 65s;")
	w("client_max_body_size %s;", body)
	w("fastcgi_connect_timeout 5s;")
	w("fastcgi_send_timeout 30s;")
	w("fastcgi_read_timeout 30s;")
	if o.KeepConn {
		w("upstream php { server %s; keepalive %d; }", pass, cmpOr(o.Keepalive, 8))
		pass = "php"
	}
	w("server {")
	w("listen %s;", addr)
	w("server_name localhost;")
	w("root %s;", o.Root)
	w("index index.php index.html;")
	if o.ServerExtra != "" {
		b.WriteString(o.ServerExtra + "\n") // verbatim: it may hold multi-line strings
	}
	w("location / { }")
	w(`location ~ [^/]\.php(/|$) {`)
	w(`fastcgi_split_path_info ^(.+\.php)(/.*)$;`)
	if !o.NoTryFiles {
		w("try_files $fastcgi_script_name =404;")
	}
	// try_files resets $fastcgi_path_info (nginx ticket 321).
	w("set $path_info $fastcgi_path_info;")
	w("fastcgi_index index.php;")
	w("%s", strings.TrimSpace(fastcgiParams))
	w("fastcgi_param  DOCUMENT_ROOT      %s;", root)
	w("fastcgi_param  SCRIPT_FILENAME    %s$fastcgi_script_name;", root)
	w("fastcgi_param  PATH_INFO          $path_info;")
	w("fastcgi_param  PATH_TRANSLATED    %s$path_info;", root)
	if o.KeepConn {
		w("fastcgi_keep_conn on;")
	}
	w("fastcgi_pass %s;", pass)
	if o.Extra != "" {
		b.WriteString(o.Extra + "\n") // verbatim: it may hold multi-line strings
	}
	w("}")
	w("}")
	w("}")
	return []byte(b.String())
}

func cmpOr(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}
