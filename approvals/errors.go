package approvals

import "errors"

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
