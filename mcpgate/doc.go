// Package mcpgate puts Countersign in front of the tools of an MCP server
// built on the official Go SDK (github.com/modelcontextprotocol/go-sdk).
//
// The MCP server is a registered Countersign agent (a [client.Client]). A
// gated tool call derives the call's authorization_details from its
// arguments and asks Countersign (a CIBA request, [client.Client.Start]) on
// behalf of the call's user: the MCP request's authenticated identity
// (the go-sdk auth middleware's [auth.TokenInfo]) or a configured user. When
// policy allows the call at once, the gate redeems the single-transaction
// token at /redeem for exactly these details and runs the tool. When a
// person must decide, the gate asks the user to open the session-bound
// approval URL in the form the session's negotiated protocol revision uses:
//
//   - 2026-07-28, client declared elicitation.url: an input_required result
//     with one URL-mode input request and an integrity-protected
//     requestState (HMAC-SHA256 over the approval, the user, a digest of the
//     tool name and arguments, and an expiry). The client's retry with that
//     state resumes that approval and nothing else: it waits a while for the
//     decision and answers input_required again, with the same state, while
//     the approval is pending.
//   - 2025-11-25, client declared elicitation.url: elicitation/create with
//     mode "url" and an elicitationId, then, once the user decided,
//     notifications/elicitation/complete. Where the server cannot send
//     requests to the client (a stateless transport), error -32042
//     (URLElicitationRequired) whose data lists the elicitation; the retry
//     after completion resumes the approval.
//   - Any known revision whose client declared no URL elicitation: a tool
//     error whose text gives the approval URL and the binding message, for a
//     person reading the conversation; the same call retried resumes the
//     approval.
//
// A call retried with the same arguments by the same user resumes the
// pending approval rather than asking again: the gate keeps pending
// approvals in memory, keyed by user and call digest, for as long as they
// live (bounded in number). A denial or an expiry ends in a tool error that
// says so. A revision the gate does not know fails closed: the call is
// refused before anyone is asked.
package mcpgate
