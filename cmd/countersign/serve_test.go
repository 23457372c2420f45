package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"

	"github.com/countersign/countersign/internal/pgtest"
	"github.com/countersign/countersign/web"
)

// TestServeHeadersTooLarge: the real server answers headers beyond
// web.MaxHeaderBytes in OAuth JSON, not with net/http's plain-text 431: its
// own limit lies above the handler's.
func TestServeHeadersTooLarge(t *testing.T) {
	conf := pgtest.NewConfig(t)
	cmd := exec.Command(binary, "serve", "--addr", "127.0.0.1:0")
	cmd.Env = env("DATABASE_URL="+conf.URL(), testKEK)
	_, addr := start(t, cmd)

	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/token", strings.NewReader("grant_type=x"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Padding", strings.Repeat("a", web.MaxHeaderBytes+8<<10)) // beyond net/http's 4 KiB of slack
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var body struct{ Error, ErrorDescription string }
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge || resp.Header.Get("Content-Type") != "application/json" ||
		resp.Header.Get("Cache-Control") != "no-store" || json.Unmarshal(b, &body) != nil || body.Error != "invalid_request" {
		t.Fatalf("%d %s %q, want 431 application/json no-store with error invalid_request", resp.StatusCode, resp.Header, b)
	}
}
