package egress

import (
	"errors"
	"net/netip"
	"testing"
)

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// TestCheckAddr: only public unicast addresses pass, unless allowlisted or,
// for loopback, in dev mode.
func TestCheckAddr(t *testing.T) {
	t.Parallel()
	refused := []string{
		"127.0.0.1", "127.1.2.3", "::1", "10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.1.1",
		"169.254.169.254", "169.254.0.1", "fe80::1", "fc00::1", "fd12:3456::1", "100.64.0.1", "100.127.255.254",
		"0.0.0.0", "0.1.2.3", "::", "224.0.0.1", "239.255.255.250", "ff02::1", "255.255.255.255", "240.0.0.1",
		"::ffff:10.0.0.1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "64:ff9b::a00:1", "2002:a00:1::1",
		"2001:db8::1", "192.0.2.1", "198.18.0.1", "198.51.100.7", "203.0.113.9", "192.0.0.8", "fec0::1", "2001::1",
	}
	public := []string{"93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450:4001::200e", "::ffff:8.8.8.8", "100.128.0.1", "172.32.0.1"}
	for _, s := range refused {
		if err := (Policy{}).checkAddr(mustAddr(s), false); !errors.Is(err, ErrForbiddenTarget) {
			t.Errorf("%s allowed, want refused", s)
		}
	}
	for _, s := range public {
		if err := (Policy{}).checkAddr(mustAddr(s), false); err != nil {
			t.Errorf("%s refused: %v", s, err)
		}
	}
	allow, err := ParseAllowlist([]string{"10.20.0.0/16", " fd00::/8", "169.254.169.254/32"})
	if err != nil {
		t.Fatal(err)
	}
	p := Policy{Allow: allow}
	for s, want := range map[string]bool{"10.20.3.4": true, "::ffff:10.20.3.4": true, "10.21.0.1": false, "fd00::5": true,
		"fc00::5": false, "169.254.169.254": true, "169.254.169.253": false, "127.0.0.1": false} {
		if got := p.checkAddr(mustAddr(s), false) == nil; got != want {
			t.Errorf("allowlist %v: %s allowed=%v, want %v", allow, s, got, want)
		}
	}
	dev := Policy{DevLoopback: true}
	for s, want := range map[string]bool{"127.0.0.1": true, "::1": true, "10.0.0.1": false, "169.254.169.254": false} {
		if got := dev.checkAddr(mustAddr(s), false) == nil; got != want {
			t.Errorf("dev: %s allowed=%v, want %v", s, got, want)
		}
	}
	// Plain http may only reach loopback, even allowlisted networks.
	both := Policy{DevLoopback: true, Allow: allow}
	for s, want := range map[string]bool{"127.0.0.1": true, "10.20.3.4": false, "8.8.8.8": false} {
		if got := both.checkAddr(mustAddr(s), true) == nil; got != want {
			t.Errorf("http: %s allowed=%v, want %v", s, got, want)
		}
	}
	if err := (Policy{Allow: allow}).checkAddr(mustAddr("127.0.0.1"), true); err == nil {
		t.Error("http outside dev allowed")
	}
}

func TestParseAllowlist(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"10.0.0.1", "10.0.0.0/33", "example.com/8", ""} {
		if _, err := ParseAllowlist([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	got, err := ParseAllowlist([]string{"10.1.2.3/8"})
	if err != nil || len(got) != 1 || got[0].String() != "10.0.0.0/8" {
		t.Errorf("10.1.2.3/8 → %v, %v", got, err)
	}
}

// TestCheckURL: https anywhere; plain http only to a loopback host in dev.
func TestCheckURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		url          string
		dev          bool
		ok, loopback bool
	}{
		{"https://agent.example.com/cb", false, true, false},
		{"https://agent.example.com/cb", true, true, false},
		{"http://agent.example.com/cb", false, false, false},
		{"http://agent.example.com/cb", true, false, false},
		{"http://127.0.0.1:8000/cb", false, false, false},
		{"http://127.0.0.1:8000/cb", true, true, true},
		{"http://[::1]:8000/cb", true, true, true},
		{"http://localhost:8000/cb", true, true, true},
		{"ftp://agent.example.com/cb", true, false, false},
		{"https://user:pass@agent.example.com/cb", false, false, false},
		{"/relative", false, false, false},
		{"https:///nohost", false, false, false},
	}
	for _, tc := range tests {
		_, lo, err := Policy{DevLoopback: tc.dev}.checkURL(tc.url)
		if (err == nil) != tc.ok || lo != tc.loopback {
			t.Errorf("%s (dev %v): err %v, loopbackOnly %v; want ok %v, loopbackOnly %v", tc.url, tc.dev, err, lo, tc.ok, tc.loopback)
		}
		if err != nil && !errors.Is(err, ErrForbiddenTarget) {
			t.Errorf("%s: %v is not ErrForbiddenTarget", tc.url, err)
		}
	}
}
