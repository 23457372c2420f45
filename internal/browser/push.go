package browser

import (
	"context"
	"strings"
	"testing"
	"time"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/serviceworker"
	"github.com/chromedp/chromedp"
)

// GrantNotifications lets origin show notifications in the tab's profile,
// as a person answering the permission prompt with Allow would.
func (tab *Tab) GrantNotifications(t testing.TB, origin string) {
	t.Helper()
	id := chromedp.FromContext(tab.ctx).BrowserContextID
	run(t, tab, "grant notifications", func(ctx context.Context, _ *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.CallBrowser(ctx, cdpbrowser.SetPermission, cdpbrowser.SetPermissionParams{
			Permission: &cdpbrowser.PermissionDescriptor{Name: "notifications"}, Setting: cdpbrowser.PermissionSettingGranted,
			Origin: origin, BrowserContextID: id})
		return chromedp.Void{}, err
	})
}

// WatchServiceWorkers makes the tab follow its origin's service worker
// registrations (the ServiceWorker domain), which DeliverPush needs; call
// it before the page registers its worker.
func (tab *Tab) WatchServiceWorkers(t testing.TB) {
	t.Helper()
	tab.mu.Lock()
	on := tab.workers != nil
	if !on {
		tab.workers = map[string]serviceworker.RegistrationID{}
	}
	tab.mu.Unlock()
	if on {
		return
	}
	events := chromedp.Events(tab.ctx, serviceworker.WorkerRegistrationUpdated)
	go func() {
		for ev, err := range events {
			if err != nil {
				return
			}
			tab.mu.Lock()
			for _, r := range ev.Registrations {
				if r.IsDeleted {
					delete(tab.workers, r.ScopeURL)
				} else {
					tab.workers[r.ScopeURL] = r.RegistrationID
				}
			}
			tab.mu.Unlock()
		}
	}()
	run(t, tab, "watch service workers", func(ctx context.Context, _ *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.Call(ctx, serviceworker.Enable, struct{}{})
		return chromedp.Void{}, err
	})
}

// DeliverPush hands data to the service worker registered for scope (a URL
// such as http://localhost:PORT/) as a Web Push message would
// (ServiceWorker.deliverPushMessage): the push event, without a push
// service. The tab must be watching its service workers.
func (tab *Tab) DeliverPush(t testing.TB, scope, data string) {
	t.Helper()
	deadline := time.Now().Add(tab.timeout)
	for {
		tab.mu.Lock()
		id, ok := tab.workers[scope]
		watching := tab.workers != nil
		tab.mu.Unlock()
		switch {
		case !watching:
			t.Fatal("DeliverPush: call WatchServiceWorkers first")
		case ok:
			run(t, tab, "deliver a push message", func(ctx context.Context, _ *chromedp.Target) (chromedp.Void, error) {
				_, err := chromedp.Call(ctx, serviceworker.DeliverPushMessage, serviceworker.DeliverPushMessageParams{
					Origin: strings.TrimSuffix(scope, "/"), RegistrationID: id, Data: data})
				return chromedp.Void{}, err
			})
			return
		case time.Now().After(deadline):
			t.Fatalf("no service worker registered for %s at %s", scope, tab.location())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
