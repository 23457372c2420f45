// Package client is the Go SDK of Countersign, for agents and for the
// resource servers that execute what agents were allowed to do.
//
// An agent asks for approval with [Client.RequestApproval]: an OpenID CIBA
// backchannel authentication request (CIBA §7) carrying the RFC 9396
// authorization_details of one transaction, authenticated as the agent's
// registration says (client_secret_basic, client_secret_post or
// private_key_jwt). It hands the caller the approval URL and binding
// message as soon as the request is accepted ([RequestOptions.OnPending]),
// waits for the decision — by polling the token endpoint at the interval
// the server set, slowing down as slow_down and Retry-After say, or by a
// [PingReceiver] that takes the server's ping callbacks — and returns the
// single-transaction token or a typed error: [*DeniedError] ([ErrDenied]),
// [ErrExpired], [*InvalidDetailsError] with the element and field path,
// [ErrUnauthorizedClient] and the rest of [*Error]. Cancelling the context
// withdraws the request on the server (/bc-cancel).
//
// A resource server checks a token offline with a [Verifier] (the JWKS is
// cached and fetched again for an unknown key id, at most every
// MinRefresh), spends it once with [Redeemer.Redeem], and can let a
// [Guard] do both in front of a handler that says how to derive the
// authorization_details from the request it is about to execute, answering
// RFC 6750 and RFC 9470 WWW-Authenticate challenges.
//
// The package speaks the wire types of package
// [github.com/countersign/countersign/protocol] and hashes as
// [github.com/countersign/countersign/rar/canonical] does, the same code the
// server runs. It depends on no server package.
package client
