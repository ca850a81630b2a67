package control

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Client reads a control endpoint.
type Client struct {
	// Addr is the endpoint: "unix:/path" or "host:port".
	Addr string
	// Timeout bounds each request. If zero, 5 s.
	Timeout time.Duration

	http *http.Client
}

func (c *Client) client() *http.Client {
	if c.http == nil {
		network, address := "tcp", c.Addr
		if path, ok := strings.CutPrefix(c.Addr, "unix:"); ok {
			network, address = "unix", path
		}
		var d net.Dialer
		c.http = &http.Client{
			Timeout: c.timeout(),
			Transport: &http.Transport{
				// Whatever the URL says, the endpoint is Addr.
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					return d.DialContext(ctx, network, address)
				},
				MaxIdleConns:    1,
				IdleConnTimeout: 30 * time.Second,
			},
		}
	}
	return c.http
}

func (c *Client) timeout() time.Duration {
	if c.Timeout <= 0 {
		return 5 * time.Second
	}
	return c.Timeout
}

// Status fetches GET /releases.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://incpathd/releases", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.client().Do(req)
	if err != nil {
		return nil, fmt.Errorf("control: %s: %w", c.Addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("control: %s: %w", c.Addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("control: %s: %s: %s", c.Addr, resp.Status, strings.TrimSpace(string(body)))
	}
	var st Status
	if err := json.Unmarshal(body, &st); err != nil {
		return nil, fmt.Errorf("control: %s: %w", c.Addr, err)
	}
	return &st, nil
}

// Close closes idle connections.
func (c *Client) Close() {
	if c.http != nil {
		c.http.CloseIdleConnections()
	}
}

// Upstreams fetches GET /upstreams.
func (c *Client) Upstreams(ctx context.Context) (*Upstreams, error) {
	var u Upstreams
	if err := c.do(ctx, "GET", "/upstreams", nil, &u); err != nil {
		return nil, err
	}
	return &u, nil
}

// Use asks the daemon to send new requests to the pool called name.
func (c *Client) Use(ctx context.Context, name string, force bool) (*UseResult, error) {
	body, _ := json.Marshal(UseRequest{Name: name, Force: force})
	var res UseResult
	if err := c.do(ctx, "POST", "/upstreams/use", body, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// do sends one request and decodes its JSON answer into out.
func (c *Client) do(ctx context.Context, method, path string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://incpathd"+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.client().Do(req)
	if err != nil {
		return fmt.Errorf("control: %s: %w", c.Addr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("control: %s: %w", c.Addr, err)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound && path == "/upstreams" && strings.Contains(string(b), "404 page not found"):
		return fmt.Errorf("control: %s: this incpathd has no /upstreams (an older version)", c.Addr)
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("control: %s: %s", c.Addr, errorText(b))
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("control: %s: %w", c.Addr, err)
	}
	return nil
}
