package browser

import (
	"net/http"
	"slices"
	"strings"
	"testing"
)

// clickWorker shows a notification when asked and opens /opened?tag=TAG
// when it is clicked.
const clickWorker = `"use strict";
self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));
self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil(self.clients.openWindow("/opened?tag=" + encodeURIComponent(event.notification.tag)));
});`

// A notification a page's service worker shows reaches the stand-in
// desktop, and a click there opens the window the worker asks for.
func TestNotificationServer(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /sw.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		w.Write([]byte(clickWorker))
	})
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(`<!DOCTYPE html><html lang="en"><head><title>Page</title></head><body><h1 id="tag">` +
			r.URL.Query().Get("tag") + `</h1></body></html>`))
	})
	base := Serve(t, mux)
	desktop := NewNotificationServer(t)
	b := New(t, WithNotificationServer(desktop))
	tab := b.NewTab(t, InBrowserProfile())
	tab.Navigate(t, base+"/")
	tab.GrantNotifications(t, base)
	var ok bool
	tab.Eval(t, `navigator.serviceWorker.register("/sw.js").then(() => navigator.serviceWorker.ready)
		.then(r => r.showNotification("Hello", {body: "from the worker", tag: "t1"})).then(() => true)`, &ok)

	n := desktop.Next(t)
	if n.App != "Chromium" || n.Summary != "Hello" || !strings.HasSuffix(n.Body, "from the worker") || !slices.Contains(n.Actions, "default") {
		t.Errorf("the desktop was asked to show %+v", n)
	}
	opened := b.OpenedTab(t, func() { desktop.Click(t, n) })
	if got := opened.Text(t, "#tag"); got != "t1" {
		t.Errorf("the opened tab shows %q, want the clicked notification's tag", got)
	}
	if got := opened.URL(t); got != base+"/opened?tag=t1" {
		t.Errorf("the opened tab is at %s", got)
	}
	desktop.WaitClosed(t, n)
}
