package main

import (
	"encoding/base64"
	"strings"
)

// tokenPayload returns a JWT's claims, unverified: the agent only shows
// them; the resource server verifies the token (client.Verifier).
func tokenPayload(token string) []byte {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil
	}
	b, _ := base64.RawURLEncoding.DecodeString(parts[1])
	return b
}
