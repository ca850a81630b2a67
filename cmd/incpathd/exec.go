package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/incpathd/incpathd/pathsafe"
	"github.com/incpathd/incpathd/pin"
	"github.com/incpathd/incpathd/rewrite"
	"github.com/spf13/pflag"
)

const execUsage = `Usage: incpathd exec [flags] -- COMMAND [ARG]...

Pins a CLI command (a cron job, a queue worker) to one release, as the daemon
pins a request: resolves --docroot once, then replaces itself with COMMAND
(execve, like exec in a shell: same process, so signals, stdin, stdout,
stderr and the exit status are the command's own), with:

  - the working directory in the resolved release: the same subdirectory
    when the working directory was under --docroot, the release itself
    otherwise;
  - when COMMAND is php (its base name is php, php8.2, php82...):
    "-d include_path=..." built from --include-path, and the --pin-ini keys
    given with -d, each with --search-replace-pattern replaced by the
    release, inserted right after COMMAND; other -d settings are passed on
    as given;
  - when COMMAND is anything else (a wrapper script): the environment
    variables INCPATHD_DOCROOT (the release directory) and
    INCPATHD_INCLUDE_PATH (the pinned --include-path) for it to use.

Every flag but -d can also be set by its INCPATHD_* variable, as for the
daemon (INCPATHD_SEARCH_REPLACE_PATTERN, INCPATHD_INCLUDE_PATH...).

`

// execve replaces the process with the command: a chdir to dir, then
// execve(2). Tests replace it to see the call instead.
var execve = execReplace

// execConfig is what the exec subcommand's flags decide.
type execConfig struct {
	docroot, pattern, includePath string
	pinINI                        []string
	useReadlink                   string
	allowRoots                    []string
	defines                       []string
}

// execPlan is the process exec becomes.
type execPlan struct {
	path string   // the binary
	argv []string // argv[0] as given, then the -d settings if php
	env  []string
	dir  string
}

// isPHP reports whether argv0 names a PHP CLI binary by its base name: php,
// php8.2, php82. Anything else (phpunit, phpstan, php-cgi, a wrapper
// script) may not take -d as php does.
func isPHP(argv0 string) bool {
	name, ok := strings.CutPrefix(filepath.Base(argv0), "php")
	return ok && strings.Trim(name, "0123456789.") == ""
}

// execCmd is the exec subcommand. It returns only if the command could not
// be started.
func execCmd(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) int {
	c := &execConfig{}
	flags := newFlags("incpathd exec", stderr)
	// Flags end at the command: its own flags are not ours.
	flags.SetInterspersed(false)
	flags.StringVar(&c.docroot, "docroot", "", "the symlinked docroot to resolve, e.g. /srv/site/current; default --search-replace-pattern")
	flags.StringVar(&c.pattern, "search-replace-pattern", "", "path replaced by the resolved release in pinned ini values; default --docroot")
	flags.StringVar(&c.includePath, "include-path", "", "include_path to pin and pass to php")
	flags.StringSliceVar(&c.pinINI, "pin-ini", rewrite.DefaultPinINI, "ini keys given with -d whose paths are pinned")
	flags.StringVar(&c.useReadlink, "use-readlink", "", "readlink only the first symlink at or below PREFIX instead of a full realpath")
	flags.Lookup("use-readlink").NoOptDefVal = "/"
	flags.StringSliceVar(&c.allowRoots, "allow-root", nil, "the resolved release must lie at or below one of these (repeatable)")
	flags.StringArrayVarP(&c.defines, "define", "d", nil, "an ini setting for php, key=value (repeatable)")
	flags.Usage = func() {
		fmt.Fprint(stderr, execUsage)
		flags.PrintDefaults()
	}
	fail := func(code int, err error) int {
		fmt.Fprintf(stderr, "incpathd exec: %v\n", err)
		return code
	}
	// Every flag but -d: a setting for php is not a daemon's.
	if _, err := parseFlags(flags, args, getenv, "docroot", "search-replace-pattern", "include-path", "pin-ini", "use-readlink", "allow-root"); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return fail(2, err)
	}
	if flags.NArg() == 0 {
		return fail(2, errors.New("no command given: incpathd exec [flags] -- php script.php"))
	}
	wd, err := os.Getwd()
	if err != nil {
		// Started in a directory deleted since, such as a pruned
		// release: run in the release itself.
		wd = ""
	}
	p, code, err := c.plan(flags.Args(), wd, os.Environ())
	if err != nil {
		return fail(code, err)
	}
	if ctx.Err() != nil {
		return fail(1, errors.New("interrupted before the command started"))
	}
	err = execve(p.path, p.argv, p.env, p.dir)
	if err == nil {
		return 0 // only a test's execve returns without an error
	}
	if errors.Is(err, fs.ErrNotExist) {
		return fail(127, fmt.Errorf("%s: %w", p.path, err))
	}
	return fail(126, fmt.Errorf("%s: %w", p.path, err))
}

// plan resolves the docroot and works out the process to become. code is
// the exit status for err: 2 for usage, 1 for resolution, 127 for a
// command not found.
func (c *execConfig) plan(cmd []string, wd string, environ []string) (p execPlan, code int, err error) {
	for _, r := range c.allowRoots {
		if !filepath.IsAbs(r) {
			return p, 2, fmt.Errorf("--allow-root: %q is not an absolute path", r)
		}
	}
	if c.useReadlink != "" && !filepath.IsAbs(c.useReadlink) {
		return p, 2, fmt.Errorf("--use-readlink: %q is not an absolute path", c.useReadlink)
	}
	docroot := c.docroot
	if docroot == "" {
		docroot = c.pattern
		if !filepath.IsAbs(docroot) {
			return p, 2, errors.New("--docroot is required (or a --search-replace-pattern that is a path)")
		}
	}
	if docroot, err = filepath.Abs(docroot); err != nil {
		return p, 1, err
	}
	r := &pin.Resolver{
		UseReadlink:    c.useReadlink != "",
		ReadlinkPrefix: c.useReadlink,
		AllowRoots:     c.allowRoots,
	}
	resolved, err := r.Resolve(docroot)
	if err != nil {
		return p, 1, err
	}
	pattern := c.pattern
	if pattern == "" {
		pattern = docroot
	}
	if p.dir, err = workDir(wd, docroot, resolved); err != nil {
		return p, 1, err
	}

	settings, include, err := c.settings(pattern, resolved)
	if err != nil {
		return p, 2, err
	}
	p.argv = slices.Clone(cmd)
	p.env = environ
	if isPHP(cmd[0]) {
		ins := make([]string, 0, 2*len(settings))
		for _, s := range settings {
			ins = append(ins, "-d", s)
		}
		p.argv = slices.Insert(p.argv, 1, ins...)
	} else {
		if len(c.defines) > 0 {
			return p, 2, fmt.Errorf("-d needs a php command, not %q: a wrapper gets INCPATHD_DOCROOT and INCPATHD_INCLUDE_PATH instead", cmd[0])
		}
		p.env = setEnv(p.env, "INCPATHD_DOCROOT", resolved)
		if include != "" {
			p.env = setEnv(p.env, "INCPATHD_INCLUDE_PATH", include)
		}
	}

	p.path = cmd[0]
	if !strings.Contains(p.path, "/") {
		if p.path, err = exec.LookPath(cmd[0]); err != nil {
			return p, 127, err
		}
	}
	// A relative command path is left as it is: it names a file in the
	// working directory exec moves to, as after `cd RELEASE`.
	return p, 0, nil
}

// settings returns the ini settings to pass to php with -d, pinned ones
// first (include_path, then the --pin-ini keys in their order, each as
// key="value"), then the other -d settings as given; and the pinned
// include_path. An include_path given with -d replaces --include-path, as
// a request's own include_path does in the daemon.
func (c *execConfig) settings(pattern, resolved string) (out []string, include string, err error) {
	pinned := make([]string, len(c.pinINI))
	set := make([]bool, len(c.pinINI))
	var verbatim []string
	hasInclude := false
	for _, d := range c.defines {
		// php joins the -d settings into INI text, one per line, with the
		// value as given when it starts with a letter or digit: a line
		// break in one would start settings of its own (an
		// auto_prepend_file, an extension) that nothing here pinned or
		// checked.
		if strings.ContainsAny(d, "\n\r") {
			return nil, "", fmt.Errorf("-d %q: a setting must not contain a line break", d)
		}
		key, value, hasValue := strings.Cut(d, "=")
		key = strings.TrimSpace(key)
		if key == "include_path" {
			hasInclude = true
		}
		if i := slices.Index(c.pinINI, key); i >= 0 && hasValue {
			pinned[i], set[i] = unquote(strings.TrimSpace(value)), true
			continue
		}
		verbatim = append(verbatim, d)
	}
	pin := func(key, value string) error {
		v, err := rewrite.PinValue(value, pattern, resolved)
		if err == nil {
			var e string
			if e, err = rewrite.Entry(key, v); err == nil {
				out = append(out, e)
				if key == "include_path" {
					include = v
				}
				return nil
			}
		}
		return fmt.Errorf("%s: %w", key, err)
	}
	if c.includePath != "" && !hasInclude {
		if err := pin("include_path", c.includePath); err != nil {
			return nil, "", err
		}
	}
	for i, key := range c.pinINI {
		if set[i] {
			if err := pin(key, pinned[i]); err != nil {
				return nil, "", err
			}
		}
	}
	return append(out, verbatim...), include, nil
}

// unquote strips one pair of matching quotes around v: -d 'k="a b"' and
// -d 'k=a b' mean the same path to the php CLI.
func unquote(v string) string {
	if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
		return v[1 : len(v)-1]
	}
	return v
}

// workDir returns the directory the command runs in: below the resolved
// release, at the same place as wd below the docroot; wd itself if it is
// in the release already; else (wd "" included) the release. The command never runs with a
// working directory that goes through the link, where a flip would move
// its relative paths to another release.
func workDir(wd, docroot, resolved string) (string, error) {
	wd, docroot = filepath.Clean(wd), filepath.Clean(docroot)
	switch {
	case pathsafe.Within(wd, docroot):
		dir := filepath.Join(resolved, strings.TrimPrefix(wd, docroot))
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return "", fmt.Errorf("the working directory %s is not in the release %s: %s is missing", wd, resolved, dir)
		}
		return dir, nil
	case pathsafe.Within(wd, resolved):
		return wd, nil
	}
	return resolved, nil
}

// setEnv returns env with name set to value, replacing earlier entries.
func setEnv(env []string, name, value string) []string {
	out := slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		return strings.HasPrefix(kv, name+"=")
	})
	return append(out, name+"="+value)
}
