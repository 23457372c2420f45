package client

import (
	"errors"
	"fmt"
	"time"

	"github.com/countersign/countersign/protocol"
	"github.com/countersign/countersign/rar/canonical"
)

// Errors a request for approval ends with. Each is matched with errors.Is
// by the *Error, *DeniedError or *InvalidDetailsError that carries the
// server's answer.
var (
	// ErrDenied: the request was denied, at admission by a rule (or a
	// limit on pending requests), or by a person. See DeniedError.
	ErrDenied = errors.New("client: access denied")
	// ErrExpired: the request expired before anyone decided it
	// (expired_token).
	ErrExpired = errors.New("client: the request expired")
	// ErrInvalidDetails: the server refused the authorization_details. See
	// InvalidDetailsError.
	ErrInvalidDetails = errors.New("client: invalid authorization_details")
	// ErrUnauthorizedClient: the agent may not ask for this (a request
	// type it is not registered for, or it is suspended).
	ErrUnauthorizedClient = errors.New("client: unauthorized client")
	// ErrInvalidClient: client authentication failed.
	ErrInvalidClient = errors.New("client: client authentication failed")
	// ErrUnknownUser: no active user matches the login hint.
	ErrUnknownUser = errors.New("client: unknown user")
	// ErrUserCode: the user requires a user_code, and none or a wrong one
	// was given (missing_user_code, invalid_user_code).
	ErrUserCode = errors.New("client: user code missing or wrong")
	// ErrInvalidBindingMessage: the binding message was refused.
	ErrInvalidBindingMessage = errors.New("client: invalid binding message")
	// ErrInvalidTarget: a resource is not a registered resource server for
	// the request's types.
	ErrInvalidTarget = errors.New("client: invalid target")
	// ErrInvalidGrant: the auth_req_id is unknown, another client's, was
	// cancelled or its token was already collected.
	ErrInvalidGrant = errors.New("client: invalid grant")
	// ErrPending: the user has not decided yet (authorization_pending);
	// only Poll returns it.
	ErrPending = errors.New("client: authorization pending")
	// ErrSlowDown: polled sooner than the interval allows (slow_down); only
	// Poll returns it.
	ErrSlowDown = errors.New("client: slow down")
	// ErrUnavailable: the server is temporarily unavailable.
	ErrUnavailable = errors.New("client: temporarily unavailable")
)

// sentinels maps an OAuth error code to the error it is.
var sentinels = map[string]error{
	protocol.CodeAccessDenied:                ErrDenied,
	protocol.CodeExpiredToken:                ErrExpired,
	protocol.CodeInvalidAuthorizationDetails: ErrInvalidDetails,
	protocol.CodeUnauthorizedClient:          ErrUnauthorizedClient,
	protocol.CodeInvalidClient:               ErrInvalidClient,
	protocol.CodeUnknownUserID:               ErrUnknownUser,
	protocol.CodeMissingUserCode:             ErrUserCode,
	protocol.CodeInvalidUserCode:             ErrUserCode,
	protocol.CodeInvalidBindingMessage:       ErrInvalidBindingMessage,
	protocol.CodeInvalidTarget:               ErrInvalidTarget,
	protocol.CodeInvalidGrant:                ErrInvalidGrant,
	protocol.CodeAuthorizationPending:        ErrPending,
	protocol.CodeSlowDown:                    ErrSlowDown,
	protocol.CodeTemporarilyUnavailable:      ErrUnavailable,
}

// Error is an OAuth error answer of a Countersign endpoint (RFC 6749 §5.2).
type Error struct {
	Code        string // "" when the answer was not an OAuth error
	Description string
	Status      int           // the HTTP status
	RetryAfter  time.Duration // from Retry-After, 0 when absent
}

func (e *Error) Error() string {
	switch {
	case e.Code == "":
		return fmt.Sprintf("client: HTTP %d", e.Status)
	case e.Description == "":
		return "client: " + e.Code
	}
	return "client: " + e.Code + ": " + e.Description
}

// Is reports whether the error's code is the one target stands for; a 5xx
// without a code is ErrUnavailable.
func (e *Error) Is(target error) bool {
	if s, ok := sentinels[e.Code]; ok {
		return s == target
	}
	return e.Code == "" && e.Status >= 500 && target == ErrUnavailable
}

// transient reports whether trying again later may succeed.
func (e *Error) transient() bool {
	return e.Code == protocol.CodeTemporarilyUnavailable || e.Code == protocol.CodeServerError || (e.Code == "" && (e.Status >= 500 || e.Status == 429))
}

// DeniedError is a request that was denied (access_denied).
type DeniedError struct {
	// Reason is the server's error_description: a rule's reason at
	// admission, or "the request was denied: " and the reviewer's reason
	// (or "the request was denied" without one) when a person denied it.
	Reason string
	// Admission is true when /bc-authorize refused the request (a rule or
	// a limit on pending requests), so no person saw it.
	Admission bool
	// RetryAfter, when positive, is when asking again may be admitted (the
	// limit on pending requests).
	RetryAfter time.Duration
	err        *Error
}

func (e *DeniedError) Error() string {
	return "client: access denied: " + e.Reason
}

// Is matches ErrDenied.
func (e *DeniedError) Is(target error) bool { return target == ErrDenied }

// Unwrap returns the server's answer.
func (e *DeniedError) Unwrap() error { return e.err }

// InvalidDetailsError is authorization_details the server (or the client,
// for what needs no request type: syntax, limits, duplicate keys) refused.
type InvalidDetailsError struct {
	// Index is the element's position in the array, -1 when the whole
	// value is refused.
	Index int
	// Path is a JSON pointer (RFC 6901) within the element: "" for the
	// element itself. Characters outside printable ASCII read U+XXXX.
	Path string
	// Rule names the failed check, such as required, pattern,
	// additionalProperties, iban_checksum or amount; "" when the server
	// said no more than Message.
	Rule    string
	Message string
	err     error
}

func (e *InvalidDetailsError) Error() string {
	fe := canonical.FieldError{Index: e.Index, Path: e.Path, Rule: e.Rule, Message: e.Message}
	return "client: invalid " + fe.Description()
}

// Is matches ErrInvalidDetails.
func (e *InvalidDetailsError) Is(target error) bool { return target == ErrInvalidDetails }

// Unwrap returns the server's answer, or the client's own *canonical.FieldError.
func (e *InvalidDetailsError) Unwrap() error { return e.err }

// typed turns an OAuth error into the error the caller matches; at says
// whether it came from /bc-authorize.
func typed(err error, admission bool) error {
	var e *Error
	if !errors.As(err, &e) {
		return err
	}
	switch e.Code {
	case protocol.CodeAccessDenied:
		return &DeniedError{Reason: e.Description, Admission: admission, RetryAfter: e.RetryAfter, err: e}
	case protocol.CodeInvalidAuthorizationDetails:
		ide := &InvalidDetailsError{Index: -1, Message: e.Description, err: e}
		if fe, ok := canonical.ParseDescription(e.Description); ok {
			ide.Index, ide.Path, ide.Rule, ide.Message = fe.Index, fe.Path, fe.Rule, fe.Message
		}
		return ide
	}
	return e
}

// transportError is a request that got no answer.
type transportError struct{ err error }

func (e *transportError) Error() string { return "client: " + e.err.Error() }
func (e *transportError) Unwrap() error { return e.err }
