package main

import (
	"io"
	"strings"
	"testing"

	"github.com/countersign/countersign/approvals"
)

// TestPprofNeedsLoopback: profiles (the process's memory) are served only on
// a loopback metrics address.
func TestPprofNeedsLoopback(t *testing.T) {
	env := func(string) string { return "" }
	base := []string{"--database-url", "postgres://u@127.0.0.1/db", "--kek", strings.Repeat("ab", 32), "--issuer", "https://cs.example.com"}
	for _, tc := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"--metrics-addr", "127.0.0.1:9464", "--pprof"}, true},
		{[]string{"--metrics-addr", "[::1]:9464", "--pprof"}, true},
		{[]string{"--metrics-addr", "localhost:9464", "--pprof"}, true},
		{[]string{"--metrics-addr", ":9464", "--pprof"}, false},
		{[]string{"--metrics-addr", "0.0.0.0:9464", "--pprof"}, false},
		{[]string{"--metrics-addr", "10.0.0.5:9464", "--pprof"}, false},
		{[]string{"--pprof"}, false},
		{[]string{"--metrics-addr", ":9464"}, true},
	} {
		_, err := loadConfig("serve", append(base, tc.args...), io.Discard, env, kindServe, nil)
		if (err == nil) != tc.ok {
			t.Errorf("%v: err %v, want ok=%v", tc.args, err, tc.ok)
		}
	}
}

// The dev sign-in links exist only in dev mode and only for an issuer on
// this machine; dev mode listens on loopback unless told otherwise.
func TestDevLinksAndAddressStayLocal(t *testing.T) {
	for _, tc := range []struct {
		dev    bool
		issuer string
		want   bool
	}{
		{true, "http://localhost:8080", true},
		{true, "http://127.0.0.1:8080", true},
		{true, "http://[::1]:8080", true},
		{true, "https://countersign.example.com", false},
		{true, "http://192.168.1.20:8080", false},
		{false, "http://localhost:8080", false},
	} {
		if got := devLinks(&Config{Dev: tc.dev}, tc.issuer); got != tc.want {
			t.Errorf("devLinks(dev=%v, %s) = %v, want %v", tc.dev, tc.issuer, got, tc.want)
		}
	}
	for _, tc := range []struct {
		dev  bool
		want string
	}{{true, "127.0.0.1:8080"}, {false, ":8080"}} {
		c := &Config{Dev: tc.dev, DatabaseURL: "postgres://localhost/db", KEK: strings.Repeat("ab", 32), Issuer: "https://countersign.example.com",
			Fatigue: approvals.DefaultFatigue, LogLevel: "info", kind: kindServe}
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		if c.Addr != tc.want {
			t.Errorf("dev=%v: listens on %q by default, want %q", tc.dev, c.Addr, tc.want)
		}
	}
}
