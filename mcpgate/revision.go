package mcpgate

import (
	"fmt"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// form is how a call asks its user to open the approval URL.
type form int

const (
	// formInputRequired: an input_required result with a URL-mode input
	// request and a requestState (2026-07-28, multi round-trip requests).
	formInputRequired form = iota + 1
	// formElicit: elicitation/create with mode "url", then
	// notifications/elicitation/complete (2025-11-25).
	formElicit
	// formURLRequired: error -32042 listing the elicitation (2025-11-25,
	// where the server cannot send the client a request).
	formURLRequired
	// formToolError: a tool error whose text gives the URL (no URL
	// elicitation).
	formToolError
)

func (f form) String() string {
	switch f {
	case formInputRequired:
		return "input_required"
	case formElicit:
		return "elicitation/create"
	case formURLRequired:
		return "URLElicitationRequired"
	case formToolError:
		return "tool error"
	}
	return fmt.Sprintf("form(%d)", int(f))
}

// The protocol revisions the gate knows.
const (
	rev20260728 = "2026-07-28"
	rev20251125 = "2025-11-25"
	rev20250618 = "2025-06-18"
	rev20250326 = "2025-03-26"
	rev20241105 = "2024-11-05"
)

// formFor decides how a call at revision asks its user, given the client's
// capabilities (nil when the session does not know them: a stateless
// transport synthesizes its sessions) and whether the server can send the
// client requests. A revision the gate does not know is an error: the call
// fails closed, since the gate cannot tell which form the client would
// understand.
func formFor(revision string, caps *mcp.ClientCapabilities, canRequest bool) (form, error) {
	urlElicitation := caps != nil && caps.Elicitation != nil && caps.Elicitation.URL != nil
	switch revision {
	case rev20260728:
		// Server-initiated requests are gone at this revision (SEP-2322);
		// capabilities come with every request, so they are known.
		if urlElicitation {
			return formInputRequired, nil
		}
		return formToolError, nil
	case rev20251125:
		switch {
		case caps == nil:
			// A stateless transport: the client's initialize went to
			// another, forgotten session. -32042 is the form that needs no
			// server-to-client request, and its message carries the URL.
			return formURLRequired, nil
		case !urlElicitation:
			return formToolError, nil
		case canRequest:
			return formElicit, nil
		}
		return formURLRequired, nil
	case rev20250618, rev20250326, rev20241105:
		// URL-mode elicitation arrived in 2025-11-25.
		return formToolError, nil
	}
	return 0, fmt.Errorf("mcpgate: the session's protocol revision %q is not one the gate knows (%s, %s, %s, %s, %s); the call is refused",
		revision, rev20260728, rev20251125, rev20250618, rev20250326, rev20241105)
}
