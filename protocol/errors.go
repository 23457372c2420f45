package protocol

// ErrorResponse is an OAuth error answer (RFC 6749 §5.2), which every
// Countersign OAuth endpoint writes with the status its code calls for.
type ErrorResponse struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

// Error codes of the OAuth endpoints (CIBA §13, §11; RFC 6749 §5.2;
// RFC 9396 §5; RFC 8707 §2).
const (
	CodeInvalidRequest              = "invalid_request"
	CodeInvalidScope                = "invalid_scope"
	CodeExpiredLoginHintToken       = "expired_login_hint_token"
	CodeUnknownUserID               = "unknown_user_id"
	CodeUnauthorizedClient          = "unauthorized_client"
	CodeMissingUserCode             = "missing_user_code"
	CodeInvalidUserCode             = "invalid_user_code"
	CodeInvalidBindingMessage       = "invalid_binding_message"
	CodeInvalidClient               = "invalid_client"
	CodeAccessDenied                = "access_denied"
	CodeInvalidAuthorizationDetails = "invalid_authorization_details"
	CodeInvalidTarget               = "invalid_target"
	CodeAuthorizationPending        = "authorization_pending"
	CodeSlowDown                    = "slow_down"
	CodeExpiredToken                = "expired_token"
	CodeInvalidGrant                = "invalid_grant"
	CodeUnsupportedGrantType        = "unsupported_grant_type"
	CodeTemporarilyUnavailable      = "temporarily_unavailable"
	CodeServerError                 = "server_error"
)
