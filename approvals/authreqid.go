package approvals

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
)

// macLen is the length of the auth_req_id MAC: 128 bits.
const macLen = 16

// ErrBadHandle is returned for an auth_req_id that this server did not issue.
var ErrBadHandle = errors.New("approvals: not an auth_req_id of this server")

// authReqIDs turns request ids into auth_req_id values and back. An auth_req_id
// is base64url(id ‖ HMAC-SHA256(key, id)[:16]): opaque to the client, and
// unforgeable without the server key, so a copy of the database alone cannot
// mint one (CIBA §7.3 asks for enough entropy; the MAC also binds it to us).
type authReqIDs struct{ key []byte }

func (h authReqIDs) issue(id [16]byte) string {
	b := make([]byte, 0, 16+macLen)
	b = append(b, id[:]...)
	b = append(b, h.mac(id[:])...)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (h authReqIDs) parse(authReqID string) (string, error) {
	// Strict: exactly one spelling of each handle is accepted.
	b, err := base64.RawURLEncoding.Strict().DecodeString(authReqID)
	if err != nil || len(b) != 16+macLen {
		return "", ErrBadHandle
	}
	if !hmac.Equal(b[16:], h.mac(b[:16])) {
		return "", ErrBadHandle
	}
	return uuidString(b[:16]), nil
}

func (h authReqIDs) mac(id []byte) []byte {
	m := hmac.New(sha256.New, h.key)
	m.Write(id)
	return m.Sum(nil)[:macLen]
}

// newUUID returns a random (version 4) UUID.
func newUUID() [16]byte {
	var u [16]byte
	_, _ = rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}

func uuidString(u []byte) string {
	h := hex.EncodeToString(u)
	return fmt.Sprintf("%s-%s-%s-%s-%s", h[0:8], h[8:12], h[12:16], h[16:20], h[20:32])
}

func parseUUID(s string) ([16]byte, bool) {
	var u [16]byte
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, false
	}
	b, err := hex.DecodeString(s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:36])
	if err != nil {
		return u, false
	}
	copy(u[:], b)
	return u, true
}

// requestIDOf returns the request id an auth_req_id stands for.
func (s *Service) requestIDOf(authReqID string) (string, error) {
	id, err := s.authReqIDs.parse(authReqID)
	if err != nil {
		return "", refuse(CodeInvalidGrant, "auth_req_id is not valid")
	}
	return id, nil
}
