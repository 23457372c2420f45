package approvals

import "github.com/countersign/countersign/protocol"

// Refusal is a request that the protocol refuses, named by its OAuth/CIBA
// error code (CIBA §13, §11; RFC 6749 §5.2; RFC 9396 §5; RFC 8707 §2). The web
// layer decides the HTTP status for each code in one place.
type Refusal struct {
	Code        string
	Description string
	// Interval is the polling interval now in force, with slow_down.
	Interval int
	// RetryAfter, when positive, is when (in seconds) trying again may
	// succeed: the web layer sends it as Retry-After.
	RetryAfter int
}

// Error codes a Refusal carries: the protocol's.
const (
	CodeInvalidRequest              = protocol.CodeInvalidRequest
	CodeInvalidScope                = protocol.CodeInvalidScope
	CodeExpiredLoginHintToken       = protocol.CodeExpiredLoginHintToken
	CodeUnknownUserID               = protocol.CodeUnknownUserID
	CodeUnauthorizedClient          = protocol.CodeUnauthorizedClient
	CodeMissingUserCode             = protocol.CodeMissingUserCode
	CodeInvalidUserCode             = protocol.CodeInvalidUserCode
	CodeInvalidBindingMessage       = protocol.CodeInvalidBindingMessage
	CodeInvalidClient               = protocol.CodeInvalidClient
	CodeAccessDenied                = protocol.CodeAccessDenied
	CodeInvalidAuthorizationDetails = protocol.CodeInvalidAuthorizationDetails
	CodeInvalidTarget               = protocol.CodeInvalidTarget
	CodeAuthorizationPending        = protocol.CodeAuthorizationPending
	CodeSlowDown                    = protocol.CodeSlowDown
	CodeExpiredToken                = protocol.CodeExpiredToken
	CodeInvalidGrant                = protocol.CodeInvalidGrant
	CodeUnsupportedGrantType        = protocol.CodeUnsupportedGrantType
	CodeTemporarilyUnavailable      = protocol.CodeTemporarilyUnavailable
)

func (r *Refusal) Error() string {
	if r.Description == "" {
		return "approvals: " + r.Code
	}
	return "approvals: " + r.Code + ": " + r.Description
}

func refuse(code, description string) *Refusal {
	return &Refusal{Code: code, Description: descriptionSafe(description)}
}

// descriptionSafe keeps an error_description within RFC 6749 §5.2's
// characters (%x20-21 / %x23-5B / %x5D-7E): others, which an admin's rule
// reason may hold, become '?' or, for quotes and backslashes, an apostrophe
// or a slash.
func descriptionSafe(s string) string {
	b := []byte(nil)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			c = '\''
		case c == '\\':
			c = '/'
		case c < 0x20 || c > 0x7e:
			// Skip the rest of a multi-byte character.
			for i+1 < len(s) && s[i+1] >= 0x80 && s[i+1] < 0xc0 {
				i++
			}
			c = '?'
		}
		b = append(b, c)
	}
	return string(b)
}
