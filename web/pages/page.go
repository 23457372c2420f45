package pages

import (
	"fmt"
	"time"
)

// Page is what every page's frame needs.
type Page struct {
	Title string
	// Nonce is this response's CSP nonce, for its script elements.
	Nonce string
	// CSRF is the signed-in session's form token; empty when signed out.
	CSRF string
	// SignedIn is the signed-in user's email; empty when signed out.
	SignedIn string
	// Asset maps an embedded asset's name to its content-hashed URL.
	Asset func(name string) string
}

// Remaining says how long until t from now, for a countdown's first value
// (the page's script keeps it current).
func Remaining(now, t time.Time) string {
	d := t.Sub(now).Round(time.Second)
	switch {
	case d <= 0:
		return "expired"
	case d < time.Minute:
		return fmt.Sprintf("%ds left", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm %02ds left", int(d.Minutes()), int(d.Seconds())%60)
	default:
		return fmt.Sprintf("%dh %02dm left", int(d.Hours()), int(d.Minutes())%60)
	}
}

// When formats t for a person, in UTC.
func When(t time.Time) string { return t.UTC().Format("2 Jan 2006 15:04 UTC") }
