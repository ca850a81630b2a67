package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/incpathd/incpathd/internal/lifecycle"
	"github.com/incpathd/incpathd/rewrite"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	restartable = true
	env := lifecycle.Env{Getenv: os.Getenv, Restartable: restartable}
	os.Exit(dispatch(ctx, os.Args[1:], env, os.Stdout, os.Stderr, nil))
}

// restartable is set by main: this process is incpathd itself, so it may
// start itself again (tuneRuntime) and own SIGHUP (lifecycle.Env). Tests
// that call run in-process leave it false.
var restartable bool

// config is everything the flags decide.
type config struct {
	listen, listenMode               string
	pattern, includePath             string
	docrootSAPIs, realpathSAPIs      []string
	realpathEvery                    time.Duration
	useReadlink                      string
	allowRoots, pinINI               []string
	pinDefaults                      []string
	defaults                         []rewrite.Setting // pinDefaults, parsed
	poolProbe                        bool
	poolProbeDir                     string
	maxConns, maxClientConns         int
	maxParamsBytes, maxParams        int
	connectTimeout, readTimeout      time.Duration
	idleTimeout, upstreamIdleTimeout time.Duration
	queueTimeout, shutdownTimeout    time.Duration
	logFormat, logLevel              string
	keepHTTPProxy, showVersion       bool
	releasesConfig
	up  upstreamConfig
	ops opsConfig
	rt  runtimeConfig
	oc  opcacheConfig

	flags *pflag.FlagSet    // for --print-config
	from  map[string]string // flag name -> fromEnv or fromFlag
	args  []string          // positional arguments
}

func newFlagSet(c *config, stderr io.Writer) *pflag.FlagSet {
	fs := newFlags("incpathd", stderr)
	fs.StringVar(&c.listen, "listen", "127.0.0.1:9001", "address the web server connects to: host:port, or unix:/path")
	fs.StringVar(&c.listenMode, "listen-mode", "0660", "permissions of a unix listen socket (octal)")
	addUpstreamFlags(fs, &c.up)
	fs.StringVar(&c.pattern, "search-replace-pattern", "", "path replaced by the resolved docroot in pinned ini values (incpath.search_replace_pattern); empty: the request's DOCUMENT_ROOT")
	fs.StringVar(&c.includePath, "include-path", "", "include_path used when a request carries none, so every request gets a pinned one")
	fs.StringSliceVar(&c.docrootSAPIs, "docroot-sapi-list", nil, "front ends whose DOCUMENT_ROOT is trusted as already resolved (e.g. nginx with $realpath_root)")
	fs.StringSliceVar(&c.realpathSAPIs, "realpath-sapi-list", []string{"*"}, "front ends whose DOCUMENT_ROOT incpathd resolves; * for all")
	fs.DurationVar(&c.realpathEvery, "realpath-every", time.Second, "how long a resolved docroot is cached where it cannot be watched (mod_realdoc's RealpathEvery); 0 resolves on every request")
	fs.StringVar(&c.useReadlink, "use-readlink", "", "readlink only the first symlink at or below PREFIX instead of a full realpath (mod_realdoc's UseReadlink)")
	fs.Lookup("use-readlink").NoOptDefVal = "/"
	fs.StringSliceVar(&c.allowRoots, "allow-root", nil, "a resolved docroot must lie at or below one of these (repeatable)")
	fs.StringSliceVar(&c.pinINI, "pin-ini", rewrite.DefaultPinINI, "ini keys in PHP_VALUE and PHP_ADMIN_VALUE whose paths are pinned")
	fs.StringArrayVar(&c.pinDefaults, "pin-default", nil, "KEY=VALUE: the value a --pin-ini key gets, pinned, on a request that does not set it (repeatable); default: the pool's own, learned from php-fpm")
	fs.BoolVar(&c.poolProbe, "pool-probe", true, "learn the pool's own values of --pin-ini keys without --pin-default (or --include-path) through php-fpm, before the first pinned request")
	fs.StringVar(&c.poolProbeDir, "pool-probe-dir", "", "directory for incpathd's PHP script (--pool-probe, --opcache); php-fpm must read it at the same path; empty: php-fpm's socket directory, $RUNTIME_DIRECTORY, /run/incpathd, then the temporary directory, the first incpathd can write")
	fs.IntVar(&c.maxConns, "max-conns", 5, "upstream connections at most, idle ones included; keep it at or below php-fpm's pm.max_children")
	fs.IntVar(&c.maxClientConns, "max-client-conns", 1024, "web server connections at most")
	fs.IntVar(&c.maxParamsBytes, "max-params-bytes", 1<<20, "largest params stream accepted from the web server")
	fs.IntVar(&c.maxParams, "max-params", 1000, "most params accepted in one request from the web server")
	fs.DurationVar(&c.connectTimeout, "connect-timeout", 5*time.Second, "time to connect to php-fpm")
	fs.DurationVar(&c.readTimeout, "read-timeout", 60*time.Second, "time for a request head (BEGIN_REQUEST and params) from its first byte, then for each body record, from the web server")
	fs.DurationVar(&c.idleTimeout, "idle-timeout", 5*time.Minute, "how long a kept web server connection may sit idle")
	fs.DurationVar(&c.upstreamIdleTimeout, "upstream-idle-timeout", 30*time.Second, "how long an idle php-fpm connection is kept")
	fs.DurationVar(&c.queueTimeout, "queue-timeout", 30*time.Second, "how long a request waits for a free php-fpm connection before a 503")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 30*time.Second, "on SIGTERM or SIGINT, how long in-flight requests may take to finish")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.BoolVar(&c.keepHTTPProxy, "keep-http-proxy", false, "forward the HTTP_PROXY param (dropped by default: httpoxy)")
	addReleasesFlags(fs, &c.releasesConfig)
	fs.BoolVar(&c.showVersion, "version", false, "print the version and exit")
	addOpsFlags(fs, &c.ops)
	addRuntimeFlags(fs, &c.rt)
	addOpcacheFlags(fs, &c.oc)
	return fs
}

// parse reads flags from args, then fills the flags not given there from
// INCPATHD_* variables: the command line wins.
func parse(args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := newFlagSet(c, stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: incpathd [serve] [flags]\n       incpathd activate|drain|exec|maintenance|warm|status|upstream ... (incpathd help COMMAND)\n\nEvery flag can also be set by the environment variable INCPATHD_<FLAG>, e.g. INCPATHD_UPSTREAM.\n\n")
		fs.PrintDefaults()
	}
	from, err := parseFlags(fs, args, getenv, allFlags...)
	if err != nil {
		return nil, err
	}
	c.flags, c.from, c.args = fs, from, fs.Args()
	return c, c.validate()
}

func (c *config) validate() error {
	if c.logFormat != "text" && c.logFormat != "json" {
		return fmt.Errorf("--log-format: %q is not text or json", c.logFormat)
	}
	if _, err := parseLevel(c.logLevel); err != nil {
		return err
	}
	if _, err := strconv.ParseUint(c.listenMode, 8, 32); err != nil {
		return fmt.Errorf("--listen-mode: %q is not an octal mode", c.listenMode)
	}
	if c.maxConns < 1 {
		return fmt.Errorf("--max-conns: %d must be at least 1", c.maxConns)
	}
	if c.maxClientConns < 1 {
		return fmt.Errorf("--max-client-conns: %d must be at least 1", c.maxClientConns)
	}
	if c.maxParamsBytes < 1024 {
		return fmt.Errorf("--max-params-bytes: %d is too small", c.maxParamsBytes)
	}
	if c.maxParams < 1 {
		return fmt.Errorf("--max-params: %d must be at least 1", c.maxParams)
	}
	if c.realpathEvery < 0 {
		return fmt.Errorf("--realpath-every: %v is negative", c.realpathEvery)
	}
	for _, r := range c.allowRoots {
		if !strings.HasPrefix(r, "/") {
			return fmt.Errorf("--allow-root: %q is not an absolute path", r)
		}
	}
	if c.useReadlink != "" && !strings.HasPrefix(c.useReadlink, "/") {
		return fmt.Errorf("--use-readlink: %q is not an absolute path", c.useReadlink)
	}
	if err := c.parseDefaults(); err != nil {
		return err
	}
	if c.poolProbeDir != "" && !strings.HasPrefix(c.poolProbeDir, "/") {
		return fmt.Errorf("--pool-probe-dir: %q is not an absolute path", c.poolProbeDir)
	}
	if err := checkHelperDir(c.poolProbeDir, c.allowRoots, c.pattern); err != nil {
		return err
	}
	if err := c.oc.validate(); err != nil {
		return err
	}
	if err := c.up.validate(); err != nil {
		return err
	}
	if err := c.releasesConfig.validate(); err != nil {
		return err
	}
	if err := c.rt.validate(); err != nil {
		return err
	}
	return c.ops.validate()
}

// parseDefaults reads --pin-default: KEY=VALUE, KEY one of --pin-ini, set
// once, VALUE a literal that can be sent between double quotes.
func (c *config) parseDefaults() error {
	c.defaults = nil
	for _, d := range c.pinDefaults {
		k, v, ok := strings.Cut(d, "=")
		switch {
		case !ok:
			return fmt.Errorf("--pin-default: %q is not KEY=VALUE", d)
		case !slices.Contains(c.pinINI, k):
			return fmt.Errorf("--pin-default: %q is not one of --pin-ini %s", k, strings.Join(c.pinINI, ","))
		case slices.ContainsFunc(c.defaults, func(s rewrite.Setting) bool { return s.Key == k }):
			return fmt.Errorf("--pin-default: %s given twice", k)
		}
		if _, err := rewrite.Entry(k, v); err != nil {
			return fmt.Errorf("--pin-default: %w", err)
		}
		c.defaults = append(c.defaults, rewrite.Setting{Key: k, Value: v})
	}
	return nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("--log-level: %q is not debug, info, warn or error", s)
	}
	return l, nil
}

func newLogger(c *config, w io.Writer) *slog.Logger {
	level, _ := parseLevel(c.logLevel)
	opts := &slog.HandlerOptions{Level: level}
	if c.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// testHookServing, if set, is given the daemon's graph before it serves:
// tests read its state.
var testHookServing func(*daemon)

// testHookStarted, if set, runs once every socket is open, before the
// daemon reports ready; an error makes it fail there, as a start that goes
// wrong late would.
var testHookStarted func() error

// run is main without the process around it, for tests: the environment
// is getenv, and the daemon neither owns SIGHUP nor restarts. ready, if not
// nil, receives the daemon's listen address once requests are accepted.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, ready chan<- string) int {
	return dispatch(ctx, args, lifecycle.Env{Getenv: getenv}, stdout, stderr, ready)
}

// dispatch runs the daemon, or one of the subcommands named by the first
// argument, in env.
func dispatch(ctx context.Context, args []string, env lifecycle.Env, stdout, stderr io.Writer, ready chan<- string) int {
	getenv := env.Getenv
	if len(args) > 0 {
		switch args[0] {
		case "serve":
			args = args[1:]
		case "drain":
			return drain(ctx, args[1:], getenv, stdout, stderr)
		case "maintenance":
			return maintenanceCmd(args[1:], getenv, stdout, stderr)
		case "activate":
			return activate(ctx, args[1:], getenv, stdout, stderr)
		case "upstream":
			return upstreamCmd(ctx, args[1:], getenv, stdout, stderr)
		case "exec":
			return execCmd(ctx, args[1:], getenv, stderr)
		case "warm":
			return warmCmd(ctx, args[1:], getenv, stdout, stderr)
		case "status":
			return statusCmd(ctx, args[1:], getenv, stdout, stderr)
		case "help":
			return help(ctx, args[1:], getenv, stdout, stderr)
		}
	}
	return serve(ctx, args, env, stdout, stderr, ready)
}

// commands are the subcommands run dispatches on; serve is the default.
var commands = []string{"serve", "activate", "drain", "exec", "maintenance", "warm", "status", "upstream", "help"}

// help is "incpathd help [COMMAND]": the same as "incpathd [COMMAND] --help",
// the form people type first.
func help(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	switch {
	case len(args) == 0:
		return run(ctx, []string{"--help"}, getenv, stdout, stderr, nil)
	case len(args) == 1 && args[0] != "help" && slices.Contains(commands, args[0]):
		return run(ctx, []string{args[0], "--help"}, getenv, stdout, stderr, nil)
	case len(args) == 1:
		fmt.Fprintf(stderr, "incpathd help: unknown command %q; the commands are %s\n", args[0], strings.Join(commands, ", "))
	default:
		fmt.Fprintf(stderr, "incpathd help: give one command at most: incpathd help [%s]\n", strings.Join(commands, "|"))
	}
	return 2
}

// serve runs the daemon until ctx ends, then shuts down gracefully.
func serve(ctx context.Context, args []string, env lifecycle.Env, stdout, stderr io.Writer, ready chan<- string) int {
	c, err := parse(args, env.Getenv, stderr)
	if errors.Is(err, pflag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "incpathd: %v\n", err)
		return 2
	}
	// A mistyped subcommand must not start a daemon.
	if len(c.args) > 0 {
		fmt.Fprintf(stderr, "incpathd: unknown command or stray argument %q\n", c.args[0])
		return 2
	}
	if c.showVersion {
		fmt.Fprintf(stdout, "incpathd %s\n", version)
		return 0
	}
	if c.ops.printConfig {
		printConfig(c, stdout)
		return 0
	}
	log := newLogger(c, stderr)
	tuneRuntime(c.rt, c.from["gomaxprocs"] != "", log)
	d, err := newDaemon(c, env, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	defer d.close()
	log.Info("incpathd serving", "version", version, "listen", d.listeners[0].Addr().String(), "upstream", c.up.addresses(),
		"realpath_every", c.realpathEvery, "pattern", c.pattern, "metrics", d.httpAddr, "pid", os.Getpid())
	if testHookServing != nil {
		testHookServing(d)
	}
	if testHookStarted != nil {
		if err := testHookStarted(); err != nil {
			log.Error("cannot start", "err", err)
			return 1
		}
	}
	return d.run(ctx, ready)
}

// rewriteConfig is how the proxy pins params.
func rewriteConfig(c *config) rewrite.Config {
	return rewrite.Config{
		SearchReplacePattern: c.pattern,
		IncludePath:          c.includePath,
		PinINI:               c.pinINI,
		Defaults:             c.defaults,
		KeepHTTPProxy:        c.keepHTTPProxy,
	}
}
