package approvals

import (
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"
)

// Errors of the domain. Callers match them with errors.Is.
var (
	ErrNotFound       = errors.New("approvals: not found")
	ErrAlreadyDecided = errors.New("approvals: already decided")
	ErrWrongState     = errors.New("approvals: wrong state")
	ErrExpired        = errors.New("approvals: expired")
	ErrSuspended      = errors.New("approvals: suspended")
	ErrConflict       = errors.New("approvals: already exists")
	ErrNotAllowed     = errors.New("approvals: not allowed")
	ErrInvalidInput   = errors.New("approvals: invalid input")
)

// InputError is invalid input that a person may be told about: Msg says
// what is wrong in words for them (it is ErrInvalidInput).
type InputError struct{ Msg string }

func (e *InputError) Error() string { return "approvals: invalid input: " + e.Msg }

// Is makes an InputError an ErrInvalidInput.
func (e *InputError) Is(target error) bool { return target == ErrInvalidInput }

func invalid(format string, a ...any) error { return &InputError{Msg: fmt.Sprintf(format, a...)} }

// displayName checks a name a person gives (a passkey's, a device's): 1 to
// 64 characters, none of them control or bidirectional-formatting
// characters, which could make it read as something else.
func displayName(what, name string) error {
	n := utf8.RuneCountInString(name)
	if n == 0 || n > 64 || !utf8.ValidString(name) {
		return invalid("a %s name has 1 to 64 characters", what)
	}
	for _, r := range name {
		if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) {
			return invalid("a %s name cannot hold control or text-direction characters", what)
		}
	}
	return nil
}
