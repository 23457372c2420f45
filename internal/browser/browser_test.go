package browser

import (
	"bytes"
	"image/png"
	"net/http"
	"os"

	"github.com/chromedp/cdproto/network"
	"strings"
	"testing"
)

const strictCSP = "default-src 'none'; script-src 'nonce-abc' 'strict-dynamic'; style-src 'self'"

func pages() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/good", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", strictCSP)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		http.SetCookie(w, &http.Cookie{Name: "who", Value: r.URL.Query().Get("who"), Path: "/"})
		w.Write([]byte(`<!DOCTYPE html><html lang="en"><head><meta name="viewport" content="width=device-width, initial-scale=1"><title>Good</title></head><body><main>
<h1 id="h">Ready</h1><label for="q">Name</label><input id="q" type="text">
<button id="go" type="button">Go</button><p id="out">none</p>
<script nonce="abc">document.getElementById("h").textContent = "Scripted";
document.getElementById("go").addEventListener("click", () => {
  document.getElementById("out").textContent = "hello " + document.getElementById("q").value; });</script>
</main></body></html>`))
	})
	mux.HandleFunc("/bad", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(`<!DOCTYPE html><html><head><title>Bad</title></head><body><input type="text"><img src="/x.png"></body></html>`))
	})
	mux.HandleFunc("/passkey", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(`<!DOCTYPE html><html lang="en"><head><title>Passkey</title></head><body><p id="out">-</p></body></html>`))
	})
	return mux
}

func TestTab(t *testing.T) {
	base := Serve(t, pages())
	if !strings.HasPrefix(base, "http://localhost:") {
		t.Fatalf("Serve returned %s, want a localhost origin", base)
	}
	b := New(t)
	tab := b.NewTab(t)
	tab.Navigate(t, base+"/good?who=a")
	if got := tab.Text(t, "#h"); got != "Scripted" {
		t.Errorf("with JavaScript the heading is %q", got)
	}
	tab.Fill(t, "#q", "Alice")
	tab.Click(t, "#go")
	if got := tab.Text(t, "#out"); got != "hello Alice" {
		t.Errorf("after Fill and Click: %q", got)
	}
	if got := tab.URL(t); got != base+"/good?who=a" {
		t.Errorf("URL %q", got)
	}
	if v := tab.Axe(t); len(v) != 0 {
		t.Errorf("axe on a good page under a strict CSP: %v", v)
	}
	path := tab.Screenshot(t, "harness good/page")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil || img.Bounds().Dx() != int(Desktop.Width) {
		t.Errorf("screenshot: %v, width %d, want a %d px PNG", err, img.Bounds().Dx(), Desktop.Width)
	}
	os.Remove(path)

	noJS := b.NewTab(t, WithoutJavaScript())
	noJS.Navigate(t, base+"/good?who=b")
	if got := noJS.Text(t, "#h"); got != "Ready" {
		t.Errorf("without JavaScript the heading is %q, want the page's own", got)
	}

	phone := b.NewTab(t, WithViewport(Phone), WithColorScheme(Dark))
	phone.Navigate(t, base+"/good?who=c")
	var facts struct {
		Width int  `json:"width"`
		Dark  bool `json:"dark"`
	}
	phone.Eval(t, `({width: window.innerWidth, dark: matchMedia("(prefers-color-scheme: dark)").matches})`, &facts)
	if facts.Width != 360 || !facts.Dark {
		t.Errorf("phone in dark mode: %+v", facts)
	}
	phone.Navigate(t, base+"/bad")
	ids := map[string]bool{}
	for _, v := range phone.Axe(t) {
		ids[v.ID] = true
	}
	for _, want := range []string{"label", "image-alt", "html-has-lang"} {
		if !ids[want] {
			t.Errorf("axe on a bad page misses %s: %v", want, ids)
		}
	}

	// Tabs are separate people unless they share a session.
	same := b.NewTab(t, WithSessionOf(tab))
	same.Navigate(t, base+"/bad")
	if c := cookie(same.Cookies(t), "who"); c != "a" {
		t.Errorf("a tab sharing the first's session sees cookie %q, want a", c)
	}
	other := b.NewTab(t)
	other.Navigate(t, base+"/bad")
	if c := cookie(other.Cookies(t), "who"); c != "" {
		t.Errorf("an isolated tab sees cookie %q", c)
	}
}

func cookie(cs []*network.Cookie, name string) string {
	for _, c := range cs {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

func TestVirtualAuthenticator(t *testing.T) {
	base := Serve(t, pages())
	tab := New(t).NewTab(t)
	auth := tab.AddAuthenticator(t, nil)
	tab.Navigate(t, base+"/passkey")
	const create = `navigator.credentials.create({publicKey: {
		challenge: new Uint8Array(32), rp: {name: "Test", id: "localhost"},
		user: {id: new Uint8Array([1, 2, 3]), name: "alice", displayName: "Alice"},
		pubKeyCredParams: [{type: "public-key", alg: -7}],
		authenticatorSelection: {residentKey: "required", userVerification: "required"}}}).then(c => c.type)`
	var typ string
	tab.Eval(t, create, &typ)
	creds := auth.Credentials(t)
	if typ != "public-key" || len(creds) != 1 || !creds[0].IsResidentCredential || creds[0].RpID != "localhost" {
		t.Fatalf("create: %q, credentials %+v", typ, creds)
	}
	const get = `navigator.credentials.get({publicKey: {challenge: new Uint8Array(32), rpId: "localhost", userVerification: "required"}})
		.then(c => "uv=" + ((new Uint8Array(c.response.authenticatorData)[32] & 4) ? 1 : 0), e => e.name)`
	var got string
	tab.Eval(t, get, &got)
	if got != "uv=1" {
		t.Errorf("get with user verification: %q", got)
	}
	auth.SetUserVerified(t, false)
	tab.Eval(t, get, &got)
	if got == "uv=1" {
		t.Errorf("get after SetUserVerified(false) still verified the user: %q", got)
	}
	t.Logf("get with user verification failing: %s", got)
}
