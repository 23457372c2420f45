package mcpgate

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gowebpki/jcs"
)

// minKeyLen is the shortest requestState key: 256 bits, SHA-256's size
// (RFC 2104 §3 recommends a key no shorter than the hash output).
const minKeyLen = 32

// stateVersion prefixes every requestState; a new encoding gets a new one.
const stateVersion = "v1"

// macLabel separates requestState MACs from any other use of the key.
const macLabel = "countersign mcpgate requestState " + stateVersion + "\x00"

// Errors of a requestState that does not resume an approval.
var (
	// ErrStateInvalid: the requestState is not one this gate issued (bad
	// encoding or MAC), or it was issued for another call or user.
	ErrStateInvalid = errors.New("mcpgate: invalid requestState")
	// ErrStateExpired: the requestState outlived its approval request.
	ErrStateExpired = errors.New("mcpgate: the approval request of this requestState has expired")
)

// state is what a requestState carries: enough to resume waiting for an
// approval on any replica that holds the key, bound to one user's one call.
type state struct {
	AuthReqID   string `json:"id"`
	User        string `json:"u"`
	Call        string `json:"c"`   // callDigest, base64url
	Expiry      int64  `json:"exp"` // Unix seconds: the request's expires_in
	ApprovalURL string `json:"url"`
	Binding     string `json:"b"`
	Interval    int64  `json:"i"` // seconds
	ElicitID    string `json:"e"`
}

// sealer issues and opens requestStates with one key.
type sealer struct{ key []byte }

// seal encodes s as v1.PAYLOAD.MAC, both base64url, the MAC an HMAC-SHA256
// over the version and the payload.
func (k sealer) seal(s state) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err) // strings and integers: cannot fail
	}
	payload := base64.RawURLEncoding.EncodeToString(b)
	return stateVersion + "." + payload + "." + base64.RawURLEncoding.EncodeToString(k.mac(payload))
}

func (k sealer) mac(payload string) []byte {
	m := hmac.New(sha256.New, k.key)
	m.Write([]byte(macLabel))
	m.Write([]byte(payload))
	return m.Sum(nil)
}

// open verifies raw's MAC in constant time and its expiry, and returns the
// state; it does not check whose call it is (see check).
func (k sealer) open(raw string, now time.Time) (state, error) {
	version, rest, ok := strings.Cut(raw, ".")
	if !ok || version != stateVersion {
		return state{}, fmt.Errorf("%w: unknown encoding", ErrStateInvalid)
	}
	payload, sig, ok := strings.Cut(rest, ".")
	if !ok {
		return state{}, fmt.Errorf("%w: malformed", ErrStateInvalid)
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, k.mac(payload)) {
		return state{}, fmt.Errorf("%w: its MAC does not verify", ErrStateInvalid)
	}
	b, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return state{}, fmt.Errorf("%w: malformed", ErrStateInvalid)
	}
	var s state
	if err := json.Unmarshal(b, &s); err != nil || s.AuthReqID == "" || s.Call == "" {
		return state{}, fmt.Errorf("%w: malformed", ErrStateInvalid)
	}
	if !now.Before(time.Unix(s.Expiry, 0)) {
		return state{}, ErrStateExpired
	}
	return s, nil
}

// check reports whether s was issued for this user's call.
func (s state) check(user, call string) error {
	// Both sides are the gate's own values: no secret to time.
	if s.User != user {
		return fmt.Errorf("%w: it was issued for another user", ErrStateInvalid)
	}
	if s.Call != call {
		return fmt.Errorf("%w: it was issued for another tool or other arguments", ErrStateInvalid)
	}
	return nil
}

// callDigest is the SHA-256 of a tool's name and the canonical JSON (RFC
// 8785) of its arguments: two calls have the same digest exactly when they
// name the same tool with the same arguments, however the JSON was spelled.
func callDigest(tool string, args json.RawMessage) (string, error) {
	if len(args) == 0 {
		args = json.RawMessage("{}")
	}
	canon, err := jcs.Transform(args)
	if err != nil {
		return "", fmt.Errorf("mcpgate: arguments: %w", err)
	}
	h := sha256.New()
	h.Write([]byte("countersign mcpgate call v1\x00"))
	h.Write([]byte(tool))
	h.Write([]byte{0})
	h.Write(canon)
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)), nil
}
