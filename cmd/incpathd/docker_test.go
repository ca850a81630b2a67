package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/incpathd/incpathd/internal/testenv"
)

// make compose-test (scripts/compose-test.sh) runs docker/ in containers.
// These tests check what can be checked without a container engine, in
// every go test run: the Dockerfile, the compose file and the Kubernetes
// manifest are parsed and held against each other and against the binary's
// real flags, and TestSidecar runs the compose topology with real
// processes.

// dockerInstruction is one instruction of a Dockerfile.
type dockerInstruction struct {
	cmd  string // upper case: FROM, RUN...
	args string
	line int
}

// parseDockerfile splits a Dockerfile into instructions: comments and
// blank lines dropped, lines ending in a backslash joined.
func parseDockerfile(text string) ([]dockerInstruction, error) {
	var out []dockerInstruction
	var cur strings.Builder
	start := 0
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if cur.Len() == 0 {
			start = n
		}
		if s, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, dockerInstruction{strings.ToUpper(cmd), strings.TrimSpace(args), start})
		cur.Reset()
	}
	if cur.Len() != 0 {
		return nil, fmt.Errorf("line %d: continuation at the end of the file", start)
	}
	return out, sc.Err()
}

type dockerStage struct {
	from, name string
	ins        []dockerInstruction
}

func (s dockerStage) all(cmd string) []string {
	var args []string
	for _, in := range s.ins {
		if in.cmd == cmd {
			args = append(args, in.args)
		}
	}
	return args
}

func (s dockerStage) last(t *testing.T, cmd string) string {
	t.Helper()
	args := s.all(cmd)
	require.NotEmpty(t, args, "stage %s has no %s", s.name, cmd)
	return args[len(args)-1]
}

// dockerStages splits instructions into stages. A FROM's image is given
// with the defaults of the ARGs before the first FROM filled in.
func dockerStages(t *testing.T, ins []dockerInstruction) []dockerStage {
	t.Helper()
	var stages []dockerStage
	globals := map[string]string{}
	for _, in := range ins {
		if in.cmd == "ARG" && len(stages) == 0 {
			k, v, ok := strings.Cut(in.args, "=")
			require.True(t, ok, "line %d: ARG %s before FROM needs a default", in.line, in.args)
			globals[k] = v
			continue
		}
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			s := dockerStage{from: os.Expand(f[0], func(k string) string {
				v, ok := globals[k]
				assert.True(t, ok, "line %d: FROM uses $%s, which no ARG sets", in.line, k)
				return v
			})}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			}
			stages = append(stages, s)
			continue
		}
		require.NotEmpty(t, stages, "line %d: %s before FROM", in.line, in.cmd)
		stages[len(stages)-1].ins = append(stages[len(stages)-1].ins, in)
	}
	return stages
}

// dockerEnv reads ENV key=value instructions.
func dockerEnv(t *testing.T, s dockerStage) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, a := range s.all("ENV") {
		for _, kv := range strings.Fields(a) {
			k, v, ok := strings.Cut(kv, "=")
			require.True(t, ok, "ENV %s: use key=value", a)
			env[k] = v
		}
	}
	return env
}

// getenvOf returns a getenv for run and parse from a map.
func getenvOf(env map[string]string) func(string) string {
	return func(k string) string { return env[k] }
}

// parseEnv parses incpathd's configuration from environment variables and
// arguments, as the binary would, and checks that every INCPATHD_ variable
// names a real flag.
func parseEnv(t *testing.T, env map[string]string, args []string) *config {
	t.Helper()
	known := map[string]bool{}
	newFlagSet(&config{}, io.Discard).VisitAll(func(f *pflag.Flag) { known[envName(f.Name)] = true })
	for k := range env {
		if strings.HasPrefix(k, "INCPATHD_") {
			assert.True(t, known[k], "%s names no flag", k)
		}
	}
	var stderr bytes.Buffer
	c, err := parse(args, getenvOf(env), &stderr)
	require.NoError(t, err, "%s", stderr.String())
	return c
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	require.NoError(t, err, addr)
	return port
}

var goDirective = regexp.MustCompile(`(?m)^go (\d+\.\d+)`)

func TestDockerfile(t *testing.T) {
	ins, err := parseDockerfile(testenv.ReadModuleFile(t, "docker/Dockerfile"))
	require.NoError(t, err)
	stages := dockerStages(t, ins)
	require.Len(t, stages, 2, "a build stage and the image")
	build, final := stages[0], stages[1]

	// The builder's Go is the one go.mod asks for.
	goVersion := goDirective.FindStringSubmatch(testenv.ReadModuleFile(t, "go.mod"))
	require.NotNil(t, goVersion)
	assert.Regexp(t, `^golang:`+regexp.QuoteMeta(goVersion[1])+`(\.\d+)?-`, build.from)
	require.NotEmpty(t, build.name)

	// A static binary of ./cmd/incpathd...
	var out string
	for _, run := range build.all("RUN") {
		if strings.Contains(run, "go build") {
			assert.Contains(t, run, "CGO_ENABLED=0", "static")
			assert.True(t, strings.HasSuffix(run, " ./cmd/incpathd"), "builds the command: %s", run)
			m := regexp.MustCompile(`-o (\S+)`).FindStringSubmatch(run)
			require.NotNil(t, m, run)
			out = m[1]
		}
	}
	require.NotEmpty(t, out, "no go build")

	// ...alone in an empty image, run by an unprivileged user.
	assert.Equal(t, "scratch", final.from)
	var dest string
	for _, c := range final.all("COPY") {
		f := strings.Fields(c)
		if len(f) == 3 && f[0] == "--from="+build.name && f[1] == out {
			dest = f[2]
		}
	}
	require.NotEmpty(t, dest, "the binary is copied from %s", build.name)
	var entrypoint []string
	require.NoError(t, json.Unmarshal([]byte(final.last(t, "ENTRYPOINT")), &entrypoint), "exec form")
	assert.Equal(t, []string{dest}, entrypoint)
	uid, gid, _ := strings.Cut(final.last(t, "USER"), ":")
	for _, id := range []string{uid, gid} {
		n, err := strconv.Atoi(id)
		require.NoError(t, err, "numeric ids: scratch has no /etc/passwd")
		assert.NotZero(t, n, "not root")
	}

	// The defaults it sets are real flags with valid values, and it exposes
	// the port it listens on.
	c := parseEnv(t, dockerEnv(t, final), nil)
	assert.Equal(t, portOf(t, c.listen), final.last(t, "EXPOSE"))

	// Base images carry a tag.
	for _, s := range stages {
		if s.from != "scratch" {
			assert.Regexp(t, `:[^:]+$`, s.from)
			assert.NotContains(t, s.from, ":latest")
		}
	}
	for _, w := range build.all("WORKDIR") {
		assert.True(t, path.IsAbs(w), "WORKDIR %s", w)
	}
}

// The build context keeps every package of the module the command needs.
func TestDockerignore(t *testing.T) {
	var excluded []string
	for _, line := range strings.Split(testenv.ReadModuleFile(t, "docker/Dockerfile.dockerignore"), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			require.False(t, strings.HasPrefix(line, "!"), "exceptions are not checked here: %s", line)
			excluded = append(excluded, strings.TrimSuffix(line, "/"))
		}
	}
	// ignored reports whether a pattern excludes rel or a directory above
	// it: a pattern matches a path from the root, "**/" any number of
	// directories before the rest.
	ignored := func(rel string) bool {
		parts := strings.Split(rel, "/")
		for i := 1; i <= len(parts); i++ {
			prefix := strings.Join(parts[:i], "/")
			for _, p := range excluded {
				if ok, _ := path.Match(p, prefix); ok {
					return true
				}
				if rest, ok := strings.CutPrefix(p, "**/"); ok {
					for j := range i {
						if ok, _ := path.Match(rest, strings.Join(parts[j:i], "/")); ok {
							return true
						}
					}
				}
			}
		}
		return false
	}
	assert.False(t, ignored("go.mod"))
	assert.False(t, ignored("go.sum"))
	assert.True(t, ignored("fcgi/server_test.go"), "the check sees the test-file pattern")
	assert.True(t, ignored("examples/deploy.sh"))

	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.Dir}}{{end}}", ".").Output()
	require.NoError(t, err)
	root := testenv.ModuleRoot(t)
	n := 0
	for _, dir := range strings.Fields(string(out)) {
		rel, err := filepath.Rel(root, dir)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue // another module's
		}
		n++
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		require.NoError(t, err)
		for _, f := range files {
			if r, _ := filepath.Rel(root, f); !strings.HasSuffix(f, "_test.go") {
				assert.False(t, ignored(filepath.ToSlash(r)), "%s is left out of the build context", r)
			}
		}
	}
	assert.Greater(t, n, 4, "the command's own packages were found")
}

// composeFile is the part of the Compose specification docker/compose.yaml
// uses; unknown keys fail the test, so a misspelt one cannot hide.
type composeFile struct {
	Name     string                    `yaml:"name"`
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image string `yaml:"image"`
	Build *struct {
		Context    string   `yaml:"context"`
		Dockerfile string   `yaml:"dockerfile"`
		Args       []string `yaml:"args"`
	} `yaml:"build"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
	Tmpfs       []string          `yaml:"tmpfs"`
	Ports       []string          `yaml:"ports"`
	DependsOn   dependsOn         `yaml:"depends_on"`
	Entrypoint  []string          `yaml:"entrypoint"`
}

// dependsOn is a service's depends_on in either of compose's forms: a list
// of names, or a map of names to conditions; it keeps the names.
type dependsOn []string

func (d *dependsOn) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.MappingNode {
		for i := 0; i < len(n.Content); i += 2 {
			*d = append(*d, n.Content[i].Value)
		}
		return nil
	}
	var names []string
	if err := n.Decode(&names); err != nil {
		return err
	}
	*d = names
	return nil
}

// composeVar matches a whole value that is one variable with a default.
var composeVar = regexp.MustCompile(`^\$\{([A-Z_]+):-([^}]+)\}$`)

// mounts returns the service's volumes as target → source.
func (s composeService) mounts() map[string]string {
	m := map[string]string{}
	for _, v := range s.Volumes {
		f := strings.Split(v, ":")
		if len(f) >= 2 {
			m[f[1]] = f[0]
		}
	}
	return m
}

func readCompose(t *testing.T) composeFile {
	t.Helper()
	dec := yaml.NewDecoder(strings.NewReader(testenv.ReadModuleFile(t, "docker/compose.yaml")))
	dec.KnownFields(true)
	var c composeFile
	require.NoError(t, dec.Decode(&c))
	return c
}

// Paths and names the compose file, the nginx configuration and the pool
// lines share.
const (
	composeSite   = "./site"
	composeCode   = "/var/www/site"
	composeSocket = "/run/php/php-fpm.sock"
)

// poolValue returns the value of key in php-fpm pool lines.
func poolValue(t *testing.T, pool, key string) string {
	t.Helper()
	for _, line := range strings.Split(pool, "\n") {
		k, v, ok := strings.Cut(line, "=")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in the pool lines", key)
	return ""
}

func TestCompose(t *testing.T) {
	c := readCompose(t)
	require.Contains(t, c.Services, "nginx")
	require.Contains(t, c.Services, "incpathd")
	require.Contains(t, c.Services, "php-fpm")
	nginx, incpathd, fpm := c.Services["nginx"], c.Services["incpathd"], c.Services["php-fpm"]

	// nginx has no copy of the code.
	for target, source := range nginx.mounts() {
		assert.NotEqual(t, composeSite, source, "nginx mounts the code at %s", target)
	}

	// incpathd and php-fpm see the code at the same path: incpathd resolves
	// the symlink, php-fpm opens what it resolved to.
	assert.Equal(t, composeSite, incpathd.mounts()[composeCode])
	assert.Equal(t, composeSite, fpm.mounts()[composeCode])

	// The binary accepts the environment, and it fits the other files.
	cfg := parseEnv(t, incpathd.Environment, nil)
	sock, ok := strings.CutPrefix(cfg.up.pools[0].addr, "unix:")
	require.True(t, ok, "upstream over a unix socket: %s", cfg.up.pools[0].addr)
	assert.Equal(t, composeSocket, sock)
	sockDir := path.Dir(sock)
	vol := incpathd.mounts()[sockDir]
	require.NotEmpty(t, vol, "incpathd mounts nothing at %s", sockDir)
	assert.Contains(t, c.Volumes, vol, "a named volume")
	assert.Equal(t, vol, fpm.mounts()[sockDir], "php-fpm shares the socket's volume")
	assert.NotContains(t, nginx.mounts(), sockDir)
	for _, p := range append([]string{cfg.pattern}, cfg.allowRoots...) {
		assert.True(t, strings.HasPrefix(p, composeCode+"/"), "%s is under the code", p)
	}
	for _, p := range strings.Split(cfg.includePath, ":") {
		assert.True(t, p == "." || strings.HasPrefix(p, composeCode+"/"), "include_path entry %s", p)
	}

	// php-fpm listens where incpathd connects, for incpathd's user, with
	// workers enough for incpathd's connections.
	poolFile := ""
	for target, source := range fpm.mounts() {
		if strings.HasPrefix(target, "/usr/local/etc/php-fpm.d/") {
			poolFile = path.Join("docker", source)
		}
	}
	require.NotEmpty(t, poolFile, "php-fpm gets the pool lines")
	pool := testenv.ReadModuleFile(t, poolFile)
	assert.Equal(t, sock, poolValue(t, pool, "listen"))
	ins, err := parseDockerfile(testenv.ReadModuleFile(t, "docker/Dockerfile"))
	require.NoError(t, err)
	stages := dockerStages(t, ins)
	uid, gid, _ := strings.Cut(stages[len(stages)-1].last(t, "USER"), ":")
	assert.Equal(t, uid, poolValue(t, pool, "listen.owner"))
	assert.Equal(t, gid, poolValue(t, pool, "listen.group"))
	children, err := strconv.Atoi(poolValue(t, pool, "pm.max_children"))
	require.NoError(t, err)
	assert.LessOrEqual(t, cfg.maxConns, children, "--max-conns at most pm.max_children")

	// incpathd is built from the Dockerfile, whose build stage's image can
	// be replaced (GO_IMAGE, passed only when set: the Dockerfile has the
	// default).
	require.NotNil(t, incpathd.Build)
	assert.Equal(t, "..", incpathd.Build.Context, "the repository root")
	assert.FileExists(t, filepath.Join(testenv.ModuleRoot(t), incpathd.Build.Dockerfile))
	assert.Equal(t, "docker/Dockerfile", incpathd.Build.Dockerfile)
	assert.Equal(t, []string{"GO_IMAGE"}, incpathd.Build.Args)
	assert.Contains(t, testenv.ReadModuleFile(t, "docker/Dockerfile"), "\nARG GO_IMAGE=")
	assert.Empty(t, incpathd.Image, "the image is the one built")

	// The other images are variables whose defaults are the official
	// images (scripts/compose-test.sh sets them where those cannot be
	// pulled).
	for name, want := range map[string][]string{
		"nginx":   {"NGINX_IMAGE", "nginx:1.26-alpine"},
		"php-fpm": {"PHP_FPM_IMAGE", "php:8.2-fpm"},
	} {
		m := composeVar.FindStringSubmatch(c.Services[name].Image)
		require.NotNil(t, m, "%s: image %q is not ${VAR:-default}", name, c.Services[name].Image)
		assert.Equal(t, want, m[1:], name)
	}

	// incpathd's user can write the maintenance file, in a tmpfs of its
	// own (docker compose exec incpathd /incpathd maintenance on).
	mdir := path.Dir(cfg.ops.maintenanceFile)
	require.NotEqual(t, ".", mdir, "INCPATHD_MAINTENANCE_FILE is set")
	assert.Contains(t, incpathd.Tmpfs, mdir+":uid="+uid+",gid="+gid+",mode=0700")

	// nginx sends FastCGI to the incpathd service on incpathd's port, and
	// is published on the port it listens on.
	conf := nginx.mounts()["/etc/nginx/conf.d/default.conf"]
	require.NotEmpty(t, conf)
	nginxConf := stripComments(testenv.ReadModuleFile(t, path.Join("docker", conf)))
	assert.Contains(t, nginxConf, "server incpathd:"+portOf(t, cfg.listen)+";")
	// ...and asks incpathd's HTTP endpoints for /readyz.
	assert.Contains(t, nginxConf, "server incpathd:"+portOf(t, cfg.ops.metrics)+";")
	assert.Equal(t, "0.0.0.0", strings.TrimSuffix(cfg.ops.metrics, ":"+portOf(t, cfg.ops.metrics)),
		"the HTTP endpoints reach the other containers")
	assert.Equal(t, poolValue(t, pool, "ping.path"), cfg.ops.upstreamPing)
	assert.NotContains(t, nginxConf, "try_files", "nginx cannot see the files")
	assert.NotContains(t, nginxConf, "$realpath_root", "nginx cannot see the files")
	require.Len(t, nginx.Ports, 1)
	published := nginx.Ports[0]
	assert.Contains(t, nginxConf, "listen "+published[strings.LastIndexByte(published, ':')+1:]+";")

	// The sample site is two releases and a current symlink.
	link, err := os.Readlink(filepath.Join(testenv.ModuleRoot(t), "docker", "site", "current"))
	require.NoError(t, err)
	assert.Equal(t, "releases/A", link)
}

// TestSidecar runs the topology of docker/compose.yaml without containers,
// from its files: nginx's workers run as nobody and cannot enter the site,
// which is root's and 0700; incpathd and php-fpm run as root next to it and
// share a unix socket. Pages are served, pinned, and follow a flip.
func TestSidecar(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: nginx's workers run as another user than php-fpm")
	}
	compose := readCompose(t)
	root := testenv.ModuleRoot(t)

	// The sample site, copied with its symlink; only root may enter it.
	site := filepath.Join(t.TempDir(), "site")
	copyDir(t, filepath.Join(root, "docker", "site"), site)
	require.NoError(t, os.Chmod(site, 0o700))

	sock := testenv.FreeSocket(t, "php-fpm.sock")
	sockPath := strings.TrimPrefix(sock, "unix:")
	pool := testenv.Fill(t, testenv.ReadModuleFile(t, "docker/php-fpm/zz-incpathd.conf"), composeSocket, sockPath)
	testenv.StartFPM(t, testenv.FPMOptions{Listen: sock, Pool: pool})

	env := map[string]string{}
	for k, v := range compose.Services["incpathd"].Environment {
		v = strings.ReplaceAll(v, composeSocket, sockPath)
		env[k] = strings.ReplaceAll(v, composeCode, site)
	}
	env["INCPATHD_LISTEN"] = testenv.FreeAddr(t)
	metrics := testenv.FreeAddr(t)
	env["INCPATHD_METRICS"] = metrics
	env["INCPATHD_MAINTENANCE_FILE"] = filepath.Join(t.TempDir(), "maintenance")
	env["INCPATHD_REALPATH_EVERY"] = "0" // see the flip at once
	addr, log, _ := startIncpathdEnv(t, getenvOf(env))

	nginx := testenv.StartNginxServer(t, testenv.NginxServerOptions{
		User: "nobody",
		Server: func(listen string) string {
			return testenv.Fill(t, testenv.ReadModuleFile(t, "docker/nginx/default.conf"),
				"listen 80;", "listen "+listen+";",
				"incpathd:9001", addr,
				"incpathd:9101", metrics,
				composeCode, site)
		},
	})

	// nginx's workers are nobody, and nobody cannot read the code.
	assertWorkersAre(t, nginx, 65534)
	cat := exec.Command("cat", filepath.Join(site, "releases", "A", "index.php"))
	cat.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cat.CombinedOutput()
	require.Error(t, err, "nobody read the code: %s", out)
	assert.Contains(t, string(out), "Permission denied")

	page := func(method, p string) map[string]string {
		t.Helper()
		var body io.Reader
		if method == "POST" {
			body = strings.NewReader("a=1")
		}
		req, err := http.NewRequest(method, nginx.URL+p, body)
		require.NoError(t, err)
		if body != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		resp, err := nginx.Client().Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.Equal(t, 200, resp.StatusCode, "%s %s: %s\nincpathd log:\n%s", method, p, b, log)
		lines := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			k, v, _ := strings.Cut(l, ": ")
			lines[k] = v
		}
		return lines
	}
	check := func(rel string, lines map[string]string) {
		t.Helper()
		dir := filepath.Join(site, "releases", rel)
		assert.Equal(t, map[string]string{
			"release":              rel,
			"include_path":         rel,
			"DOCUMENT_ROOT":        rel,
			"document_root":        dir,
			"script_filename":      filepath.Join(dir, "index.php"),
			"include_path_setting": ".:" + dir + "/include",
		}, lines)
	}
	check("A", page("GET", "/"))
	check("A", page("GET", "/index.php/a/b?c=d"))

	// /readyz through nginx: php-fpm's ping page answers through incpathd.
	resp, err := nginx.Client().Get(nginx.URL + "/readyz")
	require.NoError(t, err)
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	assert.Equal(t, 200, resp.StatusCode, "/readyz: %s", b)
	check("A", page("POST", "/some/route"))

	// A deploy, as the compose file's comment shows it.
	require.NoError(t, os.Symlink("releases/B", filepath.Join(site, "current.new")))
	require.NoError(t, os.Rename(filepath.Join(site, "current.new"), filepath.Join(site, "current")))
	check("B", page("GET", "/"))
	check("B", page("POST", "/index.php"))
}

// assertWorkersAre checks that nginx's workers run as uid. A worker drops
// root right after nginx forks it, which can be after nginx accepts
// connections: a worker still root is given a moment.
func assertWorkersAre(t *testing.T, n *testenv.Nginx, uid int) {
	t.Helper()
	var got []int
	for range 100 {
		got = got[:0]
		for _, pid := range n.Workers() {
			u, err := testenv.UID(pid)
			require.NoError(t, err)
			got = append(got, u)
		}
		if len(got) > 0 && !slices.ContainsFunc(got, func(u int) bool { return u != uid }) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("nginx workers run as %v; want uid %d", got, uid)
}

// stripComments drops '#' comments, whole lines or trailing, from an nginx
// configuration (it has no '#' inside strings).
func stripComments(conf string) string {
	var b strings.Builder
	for _, l := range strings.Split(conf, "\n") {
		l, _, _ = strings.Cut(l, "#")
		b.WriteString(l + "\n")
	}
	return b.String()
}

// copyDir copies a directory tree, symlinks as symlinks.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	require.NoError(t, filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.Type()&os.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(target, b, 0o644)
		}
	}))
}

// k8sObject is the part of the Kubernetes objects docker/k8s uses.
type k8sObject struct {
	Kind     string                `yaml:"kind"`
	Metadata struct{ Name string } `yaml:"metadata"`
	Data     map[string]string     `yaml:"data"`
	Spec     struct {
		Template struct {
			Spec k8sPodSpec `yaml:"spec"`
		} `yaml:"template"`
		Ports []struct {
			Port       int    `yaml:"port"`
			TargetPort string `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type k8sPodSpec struct {
	Volumes []struct {
		Name                  string    `yaml:"name"`
		EmptyDir              *struct{} `yaml:"emptyDir"`
		PersistentVolumeClaim *struct {
			ReadOnly bool `yaml:"readOnly"`
		} `yaml:"persistentVolumeClaim"`
		ConfigMap *struct{ Name string } `yaml:"configMap"`
	} `yaml:"volumes"`
	Containers []k8sContainer `yaml:"containers"`
}

type k8sContainer struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Env   []struct{ Name, Value string }
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	ReadinessProbe  *k8sProbe `yaml:"readinessProbe"`
	LivenessProbe   *k8sProbe `yaml:"livenessProbe"`
	SecurityContext *struct {
		RunAsNonRoot bool `yaml:"runAsNonRoot"`
		RunAsUser    int  `yaml:"runAsUser"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		SubPath   string `yaml:"subPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

type k8sProbe struct {
	HTTPGet *struct{ Path, Port string } `yaml:"httpGet"`
}

// port returns the containerPort called name, or 0.
func (c k8sContainer) port(name string) int {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

// mountOf returns where c mounts volume, or "".
func (c k8sContainer) mountOf(volume string) string {
	for _, m := range c.VolumeMounts {
		if m.Name == volume && m.SubPath == "" {
			return m.MountPath
		}
	}
	return ""
}

func TestKubernetes(t *testing.T) {
	dec := yaml.NewDecoder(strings.NewReader(testenv.ReadModuleFile(t, "docker/k8s/incpathd.yaml")))
	objects := map[string]k8sObject{}
	for {
		var o k8sObject
		err := dec.Decode(&o)
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		objects[o.Kind] = o
	}
	require.Contains(t, objects, "Deployment")
	require.Contains(t, objects, "Service")
	require.Contains(t, objects, "ConfigMap")
	pod := objects["Deployment"].Spec.Template.Spec
	containers := map[string]k8sContainer{}
	for _, c := range pod.Containers {
		containers[c.Name] = c
		assert.Regexp(t, `:[^:]+$`, c.Image, "%s: a tagged image", c.Name)
		assert.NotContains(t, c.Image, ":latest")
	}
	require.Contains(t, containers, "php-fpm")
	require.Contains(t, containers, "incpathd")
	fpm, incpathd := containers["php-fpm"], containers["incpathd"]

	env := map[string]string{}
	for _, e := range incpathd.Env {
		env[e.Name] = e.Value
	}
	// The image's defaults apply under the manifest's settings.
	ins, err := parseDockerfile(testenv.ReadModuleFile(t, "docker/Dockerfile"))
	require.NoError(t, err)
	stages := dockerStages(t, ins)
	for k, v := range dockerEnv(t, stages[len(stages)-1]) {
		if _, set := env[k]; !set {
			env[k] = v
		}
	}
	cfg := parseEnv(t, env, incpathd.Args)

	// One emptyDir for the socket, mounted in both containers where
	// incpathd looks for php-fpm and where php-fpm listens.
	var socketVol, codeVol string
	for _, v := range pod.Volumes {
		switch {
		case v.EmptyDir != nil:
			socketVol = v.Name
		case v.PersistentVolumeClaim != nil:
			codeVol = v.Name
			assert.True(t, v.PersistentVolumeClaim.ReadOnly, "the pod only reads the code")
		}
	}
	require.NotEmpty(t, socketVol, "an emptyDir for the socket")
	sock, ok := strings.CutPrefix(cfg.up.pools[0].addr, "unix:")
	require.True(t, ok, "upstream over a unix socket: %s", cfg.up.pools[0].addr)
	assert.Equal(t, path.Dir(sock), incpathd.mountOf(socketVol))
	assert.Equal(t, path.Dir(sock), fpm.mountOf(socketVol))
	pool := objects["ConfigMap"].Data["zz-incpathd.conf"]
	assert.Equal(t, sock, poolValue(t, pool, "listen"))

	// The pool lines are docker/php-fpm/zz-incpathd.conf's.
	assert.Equal(t, settings(testenv.ReadModuleFile(t, "docker/php-fpm/zz-incpathd.conf")), settings(pool))
	children, err := strconv.Atoi(poolValue(t, pool, "pm.max_children"))
	require.NoError(t, err)
	assert.LessOrEqual(t, cfg.maxConns, children, "--max-conns at most pm.max_children")

	// The code at the same path in both, read-only; every path incpathd is
	// given lies in it.
	require.NotEmpty(t, codeVol)
	code := incpathd.mountOf(codeVol)
	require.NotEmpty(t, code)
	assert.Equal(t, code, fpm.mountOf(codeVol))
	for _, c := range []k8sContainer{fpm, incpathd} {
		for _, m := range c.VolumeMounts {
			if m.Name == codeVol {
				assert.True(t, m.ReadOnly, "%s mounts the code read-only", c.Name)
			}
		}
	}
	for _, p := range append([]string{cfg.pattern}, cfg.allowRoots...) {
		assert.True(t, strings.HasPrefix(p, code+"/"), "%s is under the code", p)
	}

	// The Service, the container port and the listen address agree.
	assert.Equal(t, portOf(t, cfg.listen), strconv.Itoa(incpathd.port("fastcgi")))
	svc := objects["Service"].Spec.Ports
	require.Len(t, svc, 1)
	assert.Equal(t, "fastcgi", svc[0].TargetPort)

	// The probes reach the health endpoints on the pod's address, and
	// /readyz asks the ping page the pool serves.
	host, port, err := net.SplitHostPort(cfg.ops.metrics)
	require.NoError(t, err, "--metrics %q", cfg.ops.metrics)
	assert.NotContains(t, []string{"", "127.0.0.1", "localhost", "::1"}, host, "the kubelet does not probe loopback")
	assert.Equal(t, port, strconv.Itoa(incpathd.port("metrics")))
	for probe, want := range map[*k8sProbe]string{incpathd.ReadinessProbe: "/readyz", incpathd.LivenessProbe: "/healthz"} {
		require.NotNil(t, probe)
		require.NotNil(t, probe.HTTPGet)
		assert.Equal(t, want, probe.HTTPGet.Path)
		assert.Equal(t, "metrics", probe.HTTPGet.Port)
	}
	assert.Equal(t, poolValue(t, pool, "ping.path"), cfg.ops.upstreamPing)

	// incpathd runs as the image's user, not root.
	require.NotNil(t, incpathd.SecurityContext)
	assert.True(t, incpathd.SecurityContext.RunAsNonRoot)
	uid, _, _ := strings.Cut(stages[len(stages)-1].last(t, "USER"), ":")
	assert.Equal(t, uid, strconv.Itoa(incpathd.SecurityContext.RunAsUser))
	assert.Equal(t, uid, poolValue(t, pool, "listen.owner"))
}

// settings returns the non-comment, non-blank lines of php-fpm pool text.
func settings(pool string) []string {
	var out []string
	for _, l := range strings.Split(pool, "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, ";") {
			out = append(out, l)
		}
	}
	return slices.Clip(out)
}
