package rar

import "github.com/countersign/countersign/rar/canonical"

// FieldError reports why an authorization_details value was rejected; see
// [canonical.FieldError]. Parse, like package canonical, returns every
// rejection as one.
type FieldError = canonical.FieldError

// Limits on one authorization_details value; see package canonical.
const (
	MaxElements = canonical.MaxElements
	MaxBytes    = canonical.MaxBytes
	MaxDepth    = canonical.MaxDepth
)

// Hash returns the authorization_details_hash of a canonical form; see
// [canonical.Hash].
func Hash(c []byte) string { return canonical.Hash(c) }

// CanonicalHash returns the authorization_details_hash of raw under the same
// limits and rules as Parse, but without the registered types: it answers
// "is this the request that was approved?" for a resource server about to
// execute it, even after its type has changed. Any rejection is a
// *FieldError. It is [canonical.DetailsHash], which the SDK uses too.
func CanonicalHash(raw []byte) (string, error) { return canonical.DetailsHash(raw) }

func pointer(tokens ...string) string { return canonical.Pointer(tokens...) }
