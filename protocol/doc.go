// Package protocol is what travels between Countersign, its agents and its
// resource servers: the bodies of the endpoints' answers, the error codes,
// the token claims and the names the protocol fixes. The server (package
// web and the domain behind it) and the SDK (package client) both use these
// types, so the two cannot drift apart; the tests hold the exact bytes each
// one writes.
//
// The package is a leaf: it imports only the standard library, and holds
// no behaviour beyond JSON encoding. The authorization_details hash is
// package [github.com/countersign/countersign/rar/canonical].
package protocol
