package web

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/countersign/countersign/internal/pgtest"
)

// flakyProxy forwards TCP connections to PostgreSQL until it is taken down,
// which cuts every open connection and refuses new ones: the database is gone
// as far as the server can tell.
type flakyProxy struct {
	ln               net.Listener
	network, address string
	mu               sync.Mutex
	down             bool
	conns            map[net.Conn]bool
}

func newFlakyProxy(t *testing.T, network, address string) *flakyProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &flakyProxy{ln: ln, network: network, address: address, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { ln.Close(); p.setDown(true) })
	go p.serve()
	return p
}

func (p *flakyProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if down {
			c.Close()
			continue
		}
		up, err := net.Dial(p.network, p.address)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = true, true
		p.mu.Unlock()
		go func() { io.Copy(up, c); up.Close() }()
		go func() { io.Copy(c, up); c.Close() }()
	}
}

func (p *flakyProxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			c.Close()
		}
		p.conns = map[net.Conn]bool{}
	}
}

func TestReadyzFollowsDatabase(t *testing.T) {
	conf := pgtest.NewConfig(t)
	network, address := pgtest.Addr(conf)
	proxy := newFlakyProxy(t, network, address)
	conf.Host, conf.Port = "127.0.0.1", "0"
	_, port, _ := net.SplitHostPort(proxy.ln.Addr().String())
	conf.Port = port
	conf.Options = "sslmode=disable"
	db, err := sqlx.Open("postgres", conf.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	srv := httptest.NewServer(New(Options{DB: db}).Handler())
	defer srv.Close()

	probe := func() (int, probeResponse) {
		t.Helper()
		resp, err := http.Get(srv.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("Content-Type = %q", ct)
		}
		var body probeResponse
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, body
	}

	if code, body := probe(); code != http.StatusOK || body.Status != "ok" {
		t.Fatalf("database up: %d %+v, want 200 ok", code, body)
	}
	proxy.setDown(true)
	if code, body := probe(); code != http.StatusServiceUnavailable || body.Reason != "database unreachable" {
		t.Fatalf("database down: %d %+v, want 503 with reason", code, body)
	}
	proxy.setDown(false)
	if code, body := probe(); code != http.StatusOK || body.Status != "ok" {
		t.Fatalf("database back: %d %+v, want 200 ok without a restart", code, body)
	}
}

func TestReadyzUnmigrated(t *testing.T) {
	conf := pgtest.Empty(t)
	db, err := sqlx.Open("postgres", conf.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	srv := httptest.NewServer(New(Options{DB: db}).Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body probeResponse
	_ = json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != http.StatusServiceUnavailable || body.Reason == "" {
		t.Fatalf("unmigrated database: %d %+v, want 503 naming the schema version", resp.StatusCode, body)
	}
}

func TestHealthz(t *testing.T) {
	srv := httptest.NewServer(New(Options{}).Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(b) != "{\"status\":\"ok\"}\n" {
		t.Fatalf("healthz: %d %q", resp.StatusCode, b)
	}
}
