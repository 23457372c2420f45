// Package egress says where Countersign may send requests to URLs that
// clients chose (ping callbacks, JWKS URLs), and gives the HTTP client that
// enforces it. Without it an agent could make the server reach its own
// network (SSRF): loopback, private ranges, cloud metadata. approvals (JWKS
// fetches) and notify (ping callbacks) both use it.
package egress

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Resolver looks up the addresses of a host name. *net.Resolver is one; tests
// inject a map.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Policy says which targets may be reached. The zero Policy allows https to
// public addresses only.
type Policy struct {
	// Allow lists the networks an admin has opened (--ping-allow), which are
	// reachable even when they are private or otherwise special.
	Allow []netip.Prefix
	// DevLoopback (dev mode) allows loopback addresses, and plain http to a
	// loopback host.
	DevLoopback bool
}

// ErrForbiddenTarget is the error for a target that the policy does not
// allow: a scheme other than https, or an address that is not public.
var ErrForbiddenTarget = errors.New("egress: forbidden target")

// AllowlistError is ParseAllowlist's error: Value is not a CIDR.
type AllowlistError struct{ Value string }

func (e *AllowlistError) Error() string {
	return fmt.Sprintf("egress: %q is not a CIDR such as 10.0.0.0/8", e.Value)
}

// ParseAllowlist parses CIDRs such as 10.20.0.0/16 or fd00::/8. Its error is
// an *AllowlistError.
func ParseAllowlist(cidrs []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(cidrs))
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(strings.TrimSpace(c))
		if err != nil {
			return nil, &AllowlistError{Value: c}
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// special lists networks that are not plain public unicast, beyond what
// netip's predicates (loopback, private, link-local, multicast, unspecified)
// catch. Some embed or translate to IPv4 addresses and would otherwise be a
// way around the checks.
var special = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),          // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),      // CGNAT shared space (RFC 6598)
	netip.MustParsePrefix("192.0.0.0/24"),       // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),       // documentation
	netip.MustParsePrefix("192.88.99.0/24"),     // 6to4 relay anycast
	netip.MustParsePrefix("198.18.0.0/15"),      // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"),    // documentation
	netip.MustParsePrefix("203.0.113.0/24"),     // documentation
	netip.MustParsePrefix("240.0.0.0/4"),        // reserved, and broadcast
	netip.MustParsePrefix("::/96"),              // IPv4-compatible (deprecated)
	netip.MustParsePrefix("64:ff9b::/96"),       // NAT64
	netip.MustParsePrefix("64:ff9b:1::/48"),     // local NAT64
	netip.MustParsePrefix("100::/64"),           // discard
	netip.MustParsePrefix("2001::/23"),          // IETF protocol assignments, Teredo
	netip.MustParsePrefix("2001:db8::/32"),      // documentation
	netip.MustParsePrefix("2002::/16"),          // 6to4
	netip.MustParsePrefix("3fff::/20"),          // documentation
	netip.MustParsePrefix("5f00::/16"),          // segment routing
	netip.MustParsePrefix("fec0::/10"),          // site-local (deprecated)
	netip.MustParsePrefix("169.254.169.254/32"), // cloud metadata (also link-local)
}

// checkAddr returns nil when the policy lets a connection go to a, and
// ErrForbiddenTarget otherwise. loopbackOnly is set for plain http (dev mode).
func (p Policy) checkAddr(a netip.Addr, loopbackOnly bool) error {
	a = a.Unmap()
	if loopbackOnly {
		if p.DevLoopback && a.IsLoopback() {
			return nil
		}
		return fmt.Errorf("%w: plain http may only reach loopback (dev mode), not %s", ErrForbiddenTarget, a)
	}
	for _, n := range p.Allow {
		if n.Contains(a) {
			return nil
		}
	}
	if a.IsLoopback() && p.DevLoopback {
		return nil
	}
	if !public(a) {
		return fmt.Errorf("%w: %s is not a public address (allow its network with --ping-allow)", ErrForbiddenTarget, a)
	}
	return nil
}

// public reports whether a is a public unicast address.
func public(a netip.Addr) bool {
	if !a.IsValid() || !a.IsGlobalUnicast() || a.IsPrivate() || a.IsLoopback() || a.IsLinkLocalUnicast() {
		return false
	}
	for _, n := range special {
		if n.Contains(a) {
			return false
		}
	}
	return true
}

// CheckURL checks a URL before any network traffic: https, or plain http to a
// loopback host in dev mode (CIBA §4: a client's endpoints are https). The
// client of Client checks every request the same way; CheckURL lets a caller
// tell a forbidden target from a failed send before it starts.
func (p Policy) CheckURL(target string) (*url.URL, error) {
	u, _, err := p.checkURL(target)
	return u, err
}

// checkURL is CheckURL; it also returns whether connections for the URL may
// only reach loopback.
func (p Policy) checkURL(target string) (u *url.URL, loopbackOnly bool, err error) {
	u, err = url.Parse(target)
	if err != nil || !u.IsAbs() || u.Hostname() == "" || u.User != nil {
		return nil, false, fmt.Errorf("%w: not an absolute URL without credentials", ErrForbiddenTarget)
	}
	switch u.Scheme {
	case "https":
		return u, false, nil
	case "http":
		host := u.Hostname()
		a, err := netip.ParseAddr(host)
		loopback := strings.EqualFold(host, "localhost") || (err == nil && a.Unmap().IsLoopback())
		if p.DevLoopback && loopback {
			return u, true, nil
		}
		return nil, false, fmt.Errorf("%w: the endpoint must be https (plain http only to loopback in dev mode)", ErrForbiddenTarget)
	}
	return nil, false, fmt.Errorf("%w: scheme %q, want https", ErrForbiddenTarget, u.Scheme)
}

type loopbackOnlyKey struct{}

// dialer connects only to addresses the policy allows. It resolves the host
// itself, checks every address, and dials the checked address, so a name that
// resolves differently a moment later (DNS rebinding) cannot slip through;
// Control checks the socket's address once more just before connecting.
type dialer struct {
	policy   Policy
	resolver Resolver
	net      net.Dialer
}

func newDialer(p Policy, r Resolver, timeout time.Duration) *dialer {
	d := &dialer{policy: p, resolver: r}
	d.net = net.Dialer{Timeout: timeout, Control: d.control}
	return d
}

func (d *dialer) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot parse %q", ErrForbiddenTarget, address)
	}
	return d.policy.checkAddr(ap.Addr(), false)
}

// DialContext implements http.Transport.DialContext.
func (d *dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("egress: bad port %q", portStr)
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		if addrs, err = d.resolver.LookupNetIP(ctx, "ip", host); err != nil {
			return nil, err
		}
		if len(addrs) == 0 {
			return nil, fmt.Errorf("egress: %s has no addresses", host)
		}
	}
	loopbackOnly, _ := ctx.Value(loopbackOnlyKey{}).(bool)
	// Every address must pass, not just the first: otherwise a name with one
	// public and one internal address would be reachable whenever the public
	// one fails to answer.
	for _, a := range addrs {
		if err := d.policy.checkAddr(a, loopbackOnly); err != nil {
			return nil, err
		}
	}
	var errs []error
	for _, a := range addrs {
		c, err := d.net.DialContext(ctx, network, netip.AddrPortFrom(a.Unmap(), uint16(port)).String())
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// Client returns an HTTP client for requests to URLs that clients chose (ping
// callbacks, JWKS URLs). Every request must pass the policy: https only
// (plain http to loopback in dev mode), and connections only to addresses the
// policy allows, checked on the resolved address at connect time. It never
// follows a redirect (the 3xx is returned), uses no proxy, and keeps no
// connection open, since a pooled connection would outlive its check. A nil
// resolver means net.DefaultResolver; nil rootCAs, the system's roots.
func (p Policy) Client(timeout time.Duration, resolver Resolver, rootCAs *x509.CertPool) *http.Client {
	if resolver == nil {
		resolver = net.DefaultResolver
	}
	d := newDialer(p, resolver, timeout)
	return &http.Client{
		Transport: guarded{policy: p, next: &http.Transport{
			Proxy:                  nil, // a proxy would be dialled instead of the checked address
			DialContext:            d.DialContext,
			TLSClientConfig:        &tls.Config{RootCAs: rootCAs, MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout:    timeout,
			ResponseHeaderTimeout:  timeout,
			MaxResponseHeaderBytes: 64 << 10,
			DisableKeepAlives:      true,
		}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       timeout,
	}
}

// guarded checks each request's URL against the policy before it is sent.
type guarded struct {
	policy Policy
	next   http.RoundTripper
}

func (g guarded) RoundTrip(r *http.Request) (*http.Response, error) {
	_, loopbackOnly, err := g.policy.checkURL(r.URL.String())
	if err != nil {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, err
	}
	if loopbackOnly {
		r = r.WithContext(context.WithValue(r.Context(), loopbackOnlyKey{}, true))
	}
	return g.next.RoundTrip(r)
}
