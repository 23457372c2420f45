package loadgen

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// ErrNotLoopback: load may be driven against loopback addresses only
// (127.0.0.0/8, ::1, localhost), never against another machine.
var ErrNotLoopback = errors.New("loadgen: load may only go to a loopback address (127.0.0.0/8, ::1, localhost)")

// CheckURL checks that raw is a server base URL on loopback: http or https,
// no path, query, fragment or credentials. It returns it without a trailing
// slash.
func CheckURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("loadgen: %q is not a server base URL such as http://localhost:8080", raw)
	}
	if !loopbackHost(u.Hostname()) {
		return "", fmt.Errorf("%w: %s is not", ErrNotLoopback, u.Hostname())
	}
	return strings.TrimRight(raw, "/"), nil
}

// loopbackHost reports whether host is localhost or a loopback IP.
func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// newHTTPClient returns the client of the simulated agents and resource
// server: a connection for each flow in flight, kept alive between flows,
// no proxy, and a dialer that refuses any address that is not loopback
// (checked on the resolved address, so a name that resolves elsewhere is
// refused too).
func newHTTPClient(concurrency int) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second, Control: func(_, address string, _ syscall.RawConn) error {
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			return err
		}
		if a, err := netip.ParseAddr(host); err != nil || !a.Unmap().IsLoopback() {
			return fmt.Errorf("%w: %s is not", ErrNotLoopback, host)
		}
		return nil
	}}
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         d.DialContext,
			MaxIdleConns:        2 * concurrency,
			MaxIdleConnsPerHost: 2 * concurrency,
			IdleConnTimeout:     90 * time.Second,
		},
		// OAuth endpoints never redirect; following one could leave loopback.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
