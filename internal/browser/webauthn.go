package browser

import (
	"context"
	"testing"

	"github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"
)

// AuthenticatorOptions describe a virtual authenticator (the DevTools
// WebAuthn domain). The zero value of a field is false or empty; see
// AddAuthenticator for the defaults of a nil *AuthenticatorOptions.
type AuthenticatorOptions struct {
	Protocol                    webauthn.AuthenticatorProtocol  // ctap2 or u2f
	Transport                   webauthn.AuthenticatorTransport // internal, usb, nfc, ble
	HasResidentKey              bool                            // can make discoverable credentials (passkeys)
	HasUserVerification         bool                            // can verify its user (PIN, biometrics)
	IsUserVerified              bool                            // verification succeeds
	AutomaticPresenceSimulation bool                            // user presence succeeds at once
}

// DefaultAuthenticator is a platform authenticator with passkeys that
// verifies its user: what a phone or laptop with a screen lock offers.
var DefaultAuthenticator = AuthenticatorOptions{
	Protocol: webauthn.AuthenticatorProtocolCtap2, Transport: webauthn.AuthenticatorTransportInternal,
	HasResidentKey: true, HasUserVerification: true, IsUserVerified: true, AutomaticPresenceSimulation: true,
}

// Authenticator is a virtual authenticator attached to a tab.
type Authenticator struct {
	tab *Tab
	id  webauthn.AuthenticatorID
}

// AddAuthenticator makes WebAuthn in the tab use a virtual authenticator
// with opts (nil: DefaultAuthenticator), with no browser UI.
func (tab *Tab) AddAuthenticator(t testing.TB, opts *AuthenticatorOptions) *Authenticator {
	t.Helper()
	if opts == nil {
		opts = &DefaultAuthenticator
	}
	noUI := false
	id := run(t, tab, "add a virtual authenticator", func(ctx context.Context, _ *chromedp.Target) (webauthn.AuthenticatorID, error) {
		if _, err := chromedp.Call(ctx, webauthn.Enable, webauthn.EnableParams{EnableUI: &noUI}); err != nil {
			return "", err
		}
		res, err := chromedp.Call(ctx, webauthn.AddVirtualAuthenticator, webauthn.AddVirtualAuthenticatorParams{Options: &webauthn.VirtualAuthenticatorOptions{
			Protocol: opts.Protocol, Ctap2version: webauthn.Ctap2versionCtap21, Transport: opts.Transport,
			HasResidentKey: opts.HasResidentKey, HasUserVerification: opts.HasUserVerification,
			IsUserVerified: opts.IsUserVerified, AutomaticPresenceSimulation: opts.AutomaticPresenceSimulation,
		}})
		return res.AuthenticatorID, err
	})
	return &Authenticator{tab: tab, id: id}
}

// ID is the authenticator's DevTools id.
func (a *Authenticator) ID() webauthn.AuthenticatorID { return a.id }

// SetUserVerified makes user verification succeed or fail from now on.
func (a *Authenticator) SetUserVerified(t testing.TB, ok bool) {
	t.Helper()
	run(t, a.tab, "set user verification", func(ctx context.Context, _ *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.Call(ctx, webauthn.SetUserVerified, webauthn.SetUserVerifiedParams{AuthenticatorID: a.id, IsUserVerified: ok})
		return chromedp.Void{}, err
	})
}

// Credentials are the credentials the authenticator holds.
func (a *Authenticator) Credentials(t testing.TB) []*webauthn.Credential {
	t.Helper()
	return run(t, a.tab, "read the authenticator's credentials", func(ctx context.Context, _ *chromedp.Target) ([]*webauthn.Credential, error) {
		res, err := chromedp.Call(ctx, webauthn.GetCredentials, webauthn.GetCredentialsParams{AuthenticatorID: a.id})
		return res.Credentials, err
	})
}

// Remove detaches the authenticator.
func (a *Authenticator) Remove(t testing.TB) {
	t.Helper()
	run(t, a.tab, "remove the authenticator", func(ctx context.Context, _ *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.Call(ctx, webauthn.RemoveVirtualAuthenticator, webauthn.RemoveVirtualAuthenticatorParams{AuthenticatorID: a.id})
		return chromedp.Void{}, err
	})
}
