package browser

import (
	"strings"
	"testing"
	"time"
)

// TextSettles waits until the visible text of the element matching the CSS
// selector satisfies ok and returns it; after the tab's timeout it returns
// the last text read, for the caller to report. A live page re-renders
// itself when the server's page changes, so a read taken mid-render can
// see an element that is there but not yet filled.
func (tab *Tab) TextSettles(t testing.TB, sel string, ok func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(tab.timeout)
	for {
		got := tab.Text(t, sel)
		if ok(got) || time.Now().After(deadline) {
			return got
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TextIs is TextSettles until the text equals want.
func (tab *Tab) TextIs(t testing.TB, sel, want string) string {
	t.Helper()
	return tab.TextSettles(t, sel, func(s string) bool { return s == want })
}

// TextHas is TextSettles until the text contains want.
func (tab *Tab) TextHas(t testing.TB, sel, want string) string {
	t.Helper()
	return tab.TextSettles(t, sel, func(s string) bool { return strings.Contains(s, want) })
}
