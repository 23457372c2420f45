// Package pages renders the approver pages: server-side templ components
// that read and decide without JavaScript. Every page gets its CSP nonce and
// its assets' content-hashed URLs through Page; the handlers in web decide
// what each shows.
package pages

//go:generate go tool templ generate
