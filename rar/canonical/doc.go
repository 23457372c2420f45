// Package canonical reads an authorization_details value (RFC 9396 §2) and
// writes its canonical form and hash: the part of package rar that the
// server and the SDK share, so that an agent, a resource server and
// Countersign compute the same authorization_details_hash. It needs no
// request types, JSON Schema, YAML or templates.
//
// [Decode] reads the value in one pass and rejects: anything but a
// non-empty array of objects; more than [MaxElements] elements, [MaxBytes]
// bytes of input (whitespace included) or [MaxDepth] levels of nesting;
// duplicate object keys at any level (compared after unescaping); invalid
// UTF-8, U+0000 and \u escapes of unpaired surrogates; numbers whose
// RFC 8785 spelling would be a different decimal than the literal ("1.0",
// "1e2" and "0.1" are accepted as 1, 100 and 0.1; 12345678901234567890 is
// not — send such values as strings). Every rejection is a [*FieldError].
//
// [Canonicalize] writes RFC 8785 (JCS) from the decoded tree (the tests
// check it against github.com/gowebpki/jcs): key order, whitespace, escapes
// and number spelling do not change it; anything else does. [Hash] is
// base64url(SHA-256) without padding of the canonical form, and
// [DetailsHash] both steps from the raw JSON.
package canonical
