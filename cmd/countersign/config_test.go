package main

import (
	"io"
	"strings"
	"testing"
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
