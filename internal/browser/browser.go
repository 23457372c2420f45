// Package browser drives real headless Chromium for the browser tests of
// the approver pages: tabs isolated from each other (or sharing a signed-in
// session), phone and desktop viewports, light and dark colour schemes,
// JavaScript switched off, the DevTools virtual WebAuthn authenticator as a
// passkey provider, axe-core accessibility checks and screenshots.
//
// Chromium is Debian's (`.ci/run` installs it when missing); a test that
// cannot start it fails, saying so. Every action is bounded by the tab's
// timeout and fails the test with the page's URL.
package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/serviceworker"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"
)

// Browser is one Chromium process for a test.
type Browser struct {
	root context.Context
}

// chromiumPaths are where Debian puts Chromium, in the order tried after
// $COUNTERSIGN_CHROMIUM: the binary itself first, since /usr/bin/chromium
// is a wrapper that adds flags (extensions among them) of its own.
var chromiumPaths = []string{"/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser"}

func chromium() (string, error) {
	if p := os.Getenv("COUNTERSIGN_CHROMIUM"); p != "" {
		return p, nil
	}
	for _, p := range chromiumPaths {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("no Chromium at %s: install Debian's chromium (apt-get install chromium; .ci/run does) or set COUNTERSIGN_CHROMIUM",
		strings.Join(chromiumPaths, ", "))
}

// Option configures a new browser.
type Option func(*browserConfig)

type browserConfig struct {
	env []string // NAME=value for the Chromium process
}

// New starts Chromium, headless, with a fresh profile; it stops when the
// test ends.
func New(t testing.TB, options ...Option) *Browser {
	t.Helper()
	var cfg browserConfig
	for _, o := range options {
		o(&cfg)
	}
	path, err := chromium()
	if err != nil {
		t.Fatal(err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Headless,
		chromedp.NoSandbox, // the tests run as root in CI
		chromedp.DisableGPU,
		// The machine's network is closed: nothing but the pages under test.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("mute-audio", true),
		chromedp.Flag("hide-scrollbars", true),
	}
	if len(cfg.env) > 0 {
		opts = append(opts, chromedp.Env(cfg.env...))
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	root, cancelRoot := chromedp.NewContext(alloc)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(root, 10*time.Second)
		defer cancel()
		_ = chromedp.Cancel(ctx)
		cancelRoot()
		cancelAlloc()
	})
	// The first run starts the process; it must not carry a timeout (that
	// would end the browser with it), so a watchdog bounds it instead.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(root) }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("starting Chromium (%s): %v", path, err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("Chromium (%s) did not start within a minute", path)
	}
	return &Browser{root: root}
}

// Viewport is a screen size.
type Viewport struct {
	Width, Height int64
	Mobile        bool
	Scale         float64
}

// Screens the tests use.
var (
	Phone   = Viewport{Width: 360, Height: 780, Mobile: true, Scale: 2}
	Desktop = Viewport{Width: 1280, Height: 900, Scale: 1}
)

// ColorScheme is the prefers-color-scheme the page sees.
type ColorScheme string

// Colour schemes.
const (
	Light ColorScheme = "light"
	Dark  ColorScheme = "dark"
)

type tabConfig struct {
	viewport Viewport
	scheme   ColorScheme
	noJS     bool
	timeout  time.Duration
	shared   *Tab
	own      bool // the browser's own profile
}

// TabOption configures a new tab.
type TabOption func(*tabConfig)

// WithViewport sets the tab's screen (default Desktop).
func WithViewport(v Viewport) TabOption { return func(c *tabConfig) { c.viewport = v } }

// WithColorScheme sets prefers-color-scheme (default light).
func WithColorScheme(s ColorScheme) TabOption { return func(c *tabConfig) { c.scheme = s } }

// WithoutJavaScript switches scripts off before the tab loads anything.
func WithoutJavaScript() TabOption { return func(c *tabConfig) { c.noJS = true } }

// WithTimeout bounds each action of the tab (default 15 s).
func WithTimeout(d time.Duration) TabOption { return func(c *tabConfig) { c.timeout = d } }

// WithSessionOf opens the tab in the same browser profile as other: it
// shares its cookies (a second tab of the same person). Tabs are otherwise
// isolated from each other, as different people's browsers are.
func WithSessionOf(other *Tab) TabOption { return func(c *tabConfig) { c.shared = other } }

// InBrowserProfile opens the tab in the browser's own profile (the one on
// disk) rather than in a fresh one: a click on a notification through the
// desktop (NotificationServer) reaches only pages of that profile (Chromium
// 156 finds no notification of a profile made over DevTools). Tabs in it
// share cookies, as WithSessionOf's do.
func InBrowserProfile() TabOption { return func(c *tabConfig) { c.own = true } }

// Tab is one page.
type Tab struct {
	ctx     context.Context
	cancel  context.CancelFunc
	timeout time.Duration

	mu      sync.Mutex
	console []string
	workers map[string]serviceworker.RegistrationID // by scope, once watched
}

// NewTab opens a tab; it closes when the test ends.
func (b *Browser) NewTab(t testing.TB, opts ...TabOption) *Tab {
	t.Helper()
	cfg := tabConfig{viewport: Desktop, scheme: Light, timeout: 15 * time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	var profile []chromedp.ContextOption // the browser's own: the root's
	switch {
	case cfg.shared != nil:
		profile = append(profile, chromedp.WithExistingBrowserContext(chromedp.FromContext(cfg.shared.ctx).BrowserContextID))
	case !cfg.own:
		profile = append(profile, chromedp.WithNewBrowserContext())
	}
	ctx, cancel := chromedp.NewContext(b.root, profile...)
	tab := open(t, ctx, cancel, cfg.timeout)
	v := cfg.viewport
	steps := []chromedp.Action[chromedp.Void]{
		chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
			_, err := chromedp.Call(ctx, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{
				Width: v.Width, Height: v.Height, DeviceScaleFactor: v.Scale, Mobile: v.Mobile})
			return err
		}),
		chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
			_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
				Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: string(cfg.scheme)}}})
			return err
		}),
	}
	if cfg.noJS {
		steps = append(steps, chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
			_, err := chromedp.Call(ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true})
			return err
		}))
	}
	tab.do(t, "set up the tab", steps...)
	return tab
}

// open opens the context's target; the tab closes when the test ends.
func open(t testing.TB, ctx context.Context, cancel context.CancelFunc, timeout time.Duration) *Tab {
	t.Helper()
	// The first run opens the target, without a timeout (see New).
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		t.Fatalf("opening a tab: %v", err)
	}
	return follow(t, ctx, cancel, timeout)
}

// follow makes a Tab of the context, whose target is open, and follows
// its console; the tab ends when the test does.
func follow(t testing.TB, ctx context.Context, cancel context.CancelFunc, timeout time.Duration) *Tab {
	tab := &Tab{ctx: ctx, cancel: cancel, timeout: timeout}
	t.Cleanup(tab.Close)
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			tab.mu.Lock()
			tab.console = append(tab.console, fmt.Sprintf("%s: %s", m.Type, m.Text))
			tab.mu.Unlock()
		}
	}()
	return tab
}

// OpenedTab does action and returns the tab the browser opens because of
// it, by itself rather than for a test's NewTab: a service worker's
// clients.openWindow, say. The tab's actions are bounded as NewTab's are
// by default (15 s), and so is the wait for it. Close detaches from the
// tab; it closes with the browser.
func (b *Browser) OpenedTab(t testing.TB, action func()) *Tab {
	t.Helper()
	const timeout = 15 * time.Second
	ctx, cancel := context.WithTimeout(b.root, timeout)
	defer cancel()
	opened := make(chan target.ID, 1)
	if err := chromedp.ListenBrowser(ctx, func(ev any) {
		if ev, ok := ev.(*target.EventTargetCreated); ok && ev.TargetInfo.Type == "page" {
			select {
			case opened <- ev.TargetInfo.TargetID:
			default: // the first one only
			}
		}
	}); err != nil {
		t.Fatalf("following the browser's tabs: %v", err)
	}
	action()
	var id target.ID
	select {
	case id = <-opened:
	case <-ctx.Done():
		t.Fatalf("the browser opened no tab within %s", timeout)
	}
	// A tab caught between its blank start and its first page has no
	// JavaScript context for the attach to ask about: attach again. An
	// attempt only detaches when it ends, so that it leaves the tab open;
	// the tab closes with the browser.
	for {
		tctx, tcancel := chromedp.NewContext(b.root, chromedp.WithTargetID(id), chromedp.WithDetachOnCancel())
		err := chromedp.Do(tctx)
		if err == nil {
			return follow(t, tctx, tcancel, timeout)
		}
		tcancel()
		if !strings.Contains(err.Error(), "Cannot find default execution context") || ctx.Err() != nil {
			t.Fatalf("attaching to the tab the browser opened: %v", err)
		}
	}
}

// Close closes the tab (and its profile, unless another tab shares it).
func (tab *Tab) Close() { tab.cancel() }

// Context is the tab's chromedp context, for actions this package lacks.
func (tab *Tab) Context() context.Context { return tab.ctx }

// ConsoleMessages are what the pages wrote to the console, and the
// exceptions they threw, so far.
func (tab *Tab) ConsoleMessages() []string {
	tab.mu.Lock()
	defer tab.mu.Unlock()
	return append([]string(nil), tab.console...)
}

// recentConsole is the last console lines, for failure messages.
func (tab *Tab) recentConsole() string {
	msgs := tab.ConsoleMessages()
	if len(msgs) == 0 {
		return ""
	}
	return "\nconsole:\n  " + strings.Join(msgs[max(0, len(msgs)-10):], "\n  ")
}

// location is the tab's URL for failure messages, best effort.
func (tab *Tab) location() string {
	ctx, cancel := context.WithTimeout(tab.ctx, 2*time.Second)
	defer cancel()
	u, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		return "(unknown URL)"
	}
	return u
}

func (tab *Tab) do(t testing.TB, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab.ctx, tab.timeout)
	defer cancel()
	err := chromedp.Do(ctx, steps...)
	for i := 0; replaced(err) && i < 5; i++ {
		err = chromedp.Do(ctx, steps...)
	}
	if err != nil {
		t.Fatalf("%s at %s: %v%s", what, tab.location(), err, tab.recentConsole())
	}
}

func run[T any](t testing.TB, tab *Tab, what string, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab.ctx, tab.timeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	for i := 0; replaced(err) && i < 5; i++ {
		v, err = chromedp.Run(ctx, a)
	}
	if err != nil {
		t.Fatalf("%s at %s: %v%s", what, tab.location(), err, tab.recentConsole())
	}
	return v
}

// replaced says whether err is the page replacing the element an action
// had found (a live page re-rendering): the action is tried again.
func replaced(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "No node with given id") || strings.Contains(err.Error(), "Could not find node"))
}

// Navigate loads url and waits for its load event.
func (tab *Tab) Navigate(t testing.TB, url string) {
	t.Helper()
	tab.do(t, "navigate to "+url, chromedp.Navigate(url))
}

// WaitVisible waits until an element matching the CSS selector is visible.
func (tab *Tab) WaitVisible(t testing.TB, sel string) {
	t.Helper()
	tab.do(t, "wait for "+sel, chromedp.WaitVisible(chromedp.CSS(sel)))
}

// WaitGone waits until no element matches the CSS selector.
func (tab *Tab) WaitGone(t testing.TB, sel string) {
	t.Helper()
	tab.do(t, "wait for "+sel+" to go", chromedp.WaitNotPresent(chromedp.CSS(sel)))
}

// Click clicks the first visible element matching the CSS selector.
func (tab *Tab) Click(t testing.TB, sel string) {
	t.Helper()
	tab.do(t, "click "+sel, chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible))
}

// ClickNavigate clicks the element matching the CSS selector (a link, or
// a form's button) and waits for the document it leads to; it returns that
// document's HTTP status (after redirects).
func (tab *Tab) ClickNavigate(t testing.TB, sel string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab.ctx, tab.timeout)
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible))
	// A node the page replaced between the query and the click was never
	// clicked (the click fails resolving its box), so no navigation began:
	// query and click again.
	for i := 0; replaced(err) && i < 5; i++ {
		resp, err = chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible))
	}
	if err != nil {
		t.Fatalf("click %s and wait for the next page at %s: %v", sel, tab.location(), err)
	}
	return int(resp.Status)
}

// Fill replaces the value of the input matching the CSS selector with
// text, typed as keys.
func (tab *Tab) Fill(t testing.TB, sel, text string) {
	t.Helper()
	tab.do(t, "fill "+sel, chromedp.Clear(chromedp.CSS(sel), chromedp.NodeVisible), chromedp.SendKeys(chromedp.CSS(sel), text, chromedp.NodeVisible))
}

// Text is the visible text of the element matching the CSS selector,
// trimmed.
func (tab *Tab) Text(t testing.TB, sel string) string {
	t.Helper()
	return strings.TrimSpace(run(t, tab, "read "+sel, chromedp.Text(chromedp.CSS(sel), chromedp.NodeVisible)))
}

// URL is the tab's current URL.
func (tab *Tab) URL(t testing.TB) string {
	t.Helper()
	return run(t, tab, "read the URL", chromedp.Location())
}

// Cookies are the cookies the current page would send.
func (tab *Tab) Cookies(t testing.TB) []*network.Cookie {
	t.Helper()
	return run(t, tab, "read the cookies", func(ctx context.Context, _ *chromedp.Target) ([]*network.Cookie, error) {
		res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{})
		return res.Cookies, err
	})
}

// Eval evaluates the JavaScript expression (awaiting a promise) and
// decodes its value into out (nil: ignore it).
func (tab *Tab) Eval(t testing.TB, js string, out any) {
	t.Helper()
	raw := run(t, tab, "evaluate "+js, chromedp.Evaluate[[]byte](js, chromedp.EvalAwaitPromise))
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("evaluate %s: %v (value %s)", js, err, raw)
		}
	}
}

// Screenshot writes the whole page as name.png into the screenshot folder
// and returns its path.
func (tab *Tab) Screenshot(t testing.TB, name string) string {
	t.Helper()
	png := run(t, tab, "screenshot", chromedp.FullScreenshot(100))
	dir, err := screenshotDir()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, safeName.ReplaceAllString(name, "-")+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s", path)
	return path
}

var safeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// screenshotDir is $COUNTERSIGN_SCREENSHOTS, else .screenshots at the
// repository's root (the directory with go.mod).
func screenshotDir() (string, error) {
	dir := os.Getenv("COUNTERSIGN_SCREENSHOTS")
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return "", err
		}
		for d := wd; ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				dir = filepath.Join(d, ".screenshots")
				break
			}
			if filepath.Dir(d) == d {
				dir = filepath.Join(wd, ".screenshots")
				break
			}
		}
	}
	return dir, os.MkdirAll(dir, 0o755)
}

// Serve serves h on a loopback port for the test and returns its origin
// as http://localhost:PORT: WebAuthn refuses IP addresses as relying
// parties, so pages that use passkeys must be reached by a name.
func Serve(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return fmt.Sprintf("http://localhost:%d", ln.Addr().(*net.TCPAddr).Port)
}

// InitScript runs js in every document the tab loads from now on, before
// the page's own scripts (to take away a browser feature, say); the
// returned func stops it for later documents.
func (tab *Tab) InitScript(t testing.TB, js string) (remove func(testing.TB)) {
	t.Helper()
	id := run(t, tab, "add an init script", func(ctx context.Context, _ *chromedp.Target) (page.ScriptIdentifier, error) {
		res, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: js})
		return res.Identifier, err
	})
	return func(t testing.TB) {
		t.Helper()
		run(t, tab, "remove an init script", func(ctx context.Context, _ *chromedp.Target) (chromedp.Void, error) {
			_, err := chromedp.Call(ctx, page.RemoveScriptToEvaluateOnNewDocument, page.RemoveScriptToEvaluateOnNewDocumentParams{Identifier: id})
			return chromedp.Void{}, err
		})
	}
}
