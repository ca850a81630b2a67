package main

import (
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/incpathd/incpathd/maintenance"
)

// opsConfig is what the operating flags decide: metrics and health,
// restarts, maintenance mode.
type opsConfig struct {
	metrics, metricsMode               string
	upstreamPing, upstreamPingResponse string
	pidFile                            string
	maintenanceFile, maintenancePage   string
	maintenanceRetryAfter              time.Duration
	maintenanceAllow                   []string
	printConfig                        bool
}

func addOpsFlags(fs *pflag.FlagSet, c *opsConfig) {
	fs.StringVar(&c.metrics, "metrics", "", "serve /metrics, /healthz and /readyz over HTTP here: host:port (:port means 127.0.0.1:port), or unix:/path; off when empty")
	fs.StringVar(&c.metricsMode, "metrics-mode", "0600", "permissions of a unix --metrics socket (octal)")
	fs.StringVar(&c.upstreamPing, "upstream-ping", "", "/readyz requests this path from php-fpm (its ping.path) instead of an FCGI_GET_VALUES round trip")
	fs.StringVar(&c.upstreamPingResponse, "upstream-ping-response", "pong", "the body --upstream-ping must answer (php-fpm's ping.response)")
	fs.StringVar(&c.pidFile, "pid-file", "", "write the pid of the serving process here, rewritten by each SIGHUP restart (systemd PIDFile=)")
	fs.StringVar(&c.maintenanceFile, "maintenance-file", "", "while this file exists, answer every request with 503 without contacting php-fpm")
	fs.StringVar(&c.maintenancePage, "maintenance-page", "", "file holding the maintenance page; a built-in plain page when empty")
	fs.DurationVar(&c.maintenanceRetryAfter, "maintenance-retry-after", time.Minute, "Retry-After of maintenance answers (sent in whole seconds)")
	fs.StringSliceVar(&c.maintenanceAllow, "maintenance-allow", nil, "REMOTE_ADDR networks (CIDR or address) let through to php-fpm during maintenance (repeatable)")
	fs.BoolVar(&c.printConfig, "print-config", false, "print the effective configuration, each value with where it came from, and exit")
}

func (c *opsConfig) validate() error {
	if c.metrics != "" {
		if _, err := metricsAddr(c.metrics); err != nil {
			return fmt.Errorf("--metrics: %w", err)
		}
	}
	if _, err := strconv.ParseUint(c.metricsMode, 8, 32); err != nil {
		return fmt.Errorf("--metrics-mode: %q is not an octal mode", c.metricsMode)
	}
	if c.upstreamPing != "" && !strings.HasPrefix(c.upstreamPing, "/") {
		return fmt.Errorf("--upstream-ping: %q does not start with /", c.upstreamPing)
	}
	if c.upstreamPingResponse == "" {
		return fmt.Errorf("--upstream-ping-response: empty")
	}
	if c.maintenanceRetryAfter < 0 {
		return fmt.Errorf("--maintenance-retry-after: %v is negative", c.maintenanceRetryAfter)
	}
	if c.maintenancePage != "" && c.maintenanceFile == "" {
		return fmt.Errorf("--maintenance-page: needs --maintenance-file")
	}
	if len(c.maintenanceAllow) > 0 && c.maintenanceFile == "" {
		return fmt.Errorf("--maintenance-allow: needs --maintenance-file")
	}
	if _, err := maintenance.ParseAllow(c.maintenanceAllow); err != nil {
		return fmt.Errorf("--maintenance-allow: %w", err)
	}
	return nil
}

// metricsAddr spells --metrics as listen wants it: a bare ":port" stays on
// loopback, since the endpoints are for the host's own scraper and probes.
func metricsAddr(s string) (string, error) {
	if path, ok := strings.CutPrefix(s, "unix:"); ok {
		if !strings.HasPrefix(path, "/") {
			return "", fmt.Errorf("%q: the socket path must be absolute", s)
		}
		return s, nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("%q is not host:port, :port or unix:/path", s)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "", fmt.Errorf("%q: bad port", s)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// printConfig writes every flag with its effective value and its source.
func printConfig(c *config, w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FLAG\tVALUE\tFROM")
	c.flags.VisitAll(func(f *pflag.Flag) {
		switch f.Name {
		case "print-config", "version", "help":
			return
		}
		from := c.from[f.Name]
		if from == "" {
			from = fromDefault
		}
		if from == fromEnv {
			from += " " + envName(f.Name)
		}
		fmt.Fprintf(tw, "--%s\t%s\t%s\n", f.Name, configValue(f), from)
	})
	tw.Flush()
}

// configValue shows a value so that an empty one is still visible.
func configValue(f *pflag.Flag) string {
	v := f.Value.String()
	if sv, ok := f.Value.(pflag.SliceValue); ok {
		v = strings.Join(sv.GetSlice(), ",")
	}
	if v == "" {
		return `""`
	}
	return v
}
