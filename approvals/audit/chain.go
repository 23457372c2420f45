// Package audit is the sealed audit trail's format: the canonical form of an
// event, the hash chain over events, signed checkpoints, the JSON Lines
// export, and a verifier that walks any of them and names the first broken
// place. It does no I/O of its own, so the same code checks the database
// (approvals.Store.VerifyAudit) and an exported file (countersign audit
// verify --file) offline.
//
// The chain: the event at position p (from 1, without gaps) has hash
//
//	h(p) = SHA-256(h(p-1) || JCS(event))
//
// where h(0) is 32 zero bytes and JCS is the RFC 8785 canonical JSON of the
// event's Record. A checkpoint signs h(N) and N (ES256 JWS over the JCS of
// its Claims) after each sealed batch, with a key that the database alone
// cannot produce (it is sealed under the KEK), so rewriting events and
// hashes alike is caught at the next checkpoint.
package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/gowebpki/jcs"

	"github.com/countersign/countersign/rar/canonical"
)

// Hash is a position's chain hash.
type Hash [sha256.Size]byte

// String is the hash in lowercase hex, as the export writes it.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// MarshalText writes the hash in hex.
func (h Hash) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// UnmarshalText reads a hash in hex.
func (h *Hash) UnmarshalText(b []byte) error {
	if len(b) != 2*sha256.Size {
		return fmt.Errorf("audit: a hash is %d hex digits, not %d", 2*sha256.Size, len(b))
	}
	if _, err := hex.Decode(h[:], b); err != nil {
		return fmt.Errorf("audit: hash: %w", err)
	}
	return nil
}

// HashFrom copies a 32-byte value into a Hash.
func HashFrom(b []byte) (Hash, error) {
	var h Hash
	if len(b) != len(h) {
		return h, fmt.Errorf("audit: a hash is %d bytes, not %d", len(h), len(b))
	}
	copy(h[:], b)
	return h, nil
}

// TimeFormat is how an event's time is written in its sealed form: UTC with
// microseconds, PostgreSQL's precision, so that the database's value and
// the exported one read back to the same text.
const TimeFormat = "2006-01-02T15:04:05.000000Z"

// Record is an audit event as it is sealed: every column of audit_events
// but the sealing bookkeeping, with absent ids as null.
type Record struct {
	ID        int64           `json:"id"`
	At        string          `json:"at"`
	Kind      string          `json:"kind"`
	Actor     string          `json:"actor"`
	RequestID *string         `json:"request_id"`
	AgentID   *string         `json:"agent_id"`
	UserID    *string         `json:"user_id"`
	Subject   *string         `json:"subject"`
	Body      json.RawMessage `json:"body"`
}

// FormatTime writes t in TimeFormat: a checkpoint's SealedAt. A Record's At
// is written by the database in the same form (approvals' atTextSQL).
func FormatTime(t time.Time) string { return t.UTC().Format(TimeFormat) }

// Canonical is the record's RFC 8785 form, the bytes the chain hashes. It
// fails only for a record whose body has none (see SealForm).
func (r *Record) Canonical() ([]byte, error) {
	if c, ok := r.appendCanonical(make([]byte, 0, 256+len(r.Body))); ok {
		return c, nil
	}
	// The general path, for what the direct one does not take (invalid
	// UTF-8, a body number jcs spells differently).
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("audit: event %d: %w", r.ID, err)
	}
	c, err := jcs.Transform(b)
	if err != nil {
		return nil, fmt.Errorf("audit: event %d: %w", r.ID, err)
	}
	return c, nil
}

// SealForm makes r the record the chain seals and returns its canonical
// form. That is r itself, unless its body has no RFC 8785 form (a number
// beyond IEEE 754 such as 1e400, which jsonb keeps, or nesting deeper than
// JSON encoders go): then the body becomes its stored text, as a JSON
// string, so that no row can stop the chain, and the export carries the
// same string.
func (r *Record) SealForm() []byte {
	if c, err := r.Canonical(); err == nil {
		return c
	}
	quoted, _ := json.Marshal(string(r.Body)) // a string always encodes
	r.Body = quoted
	c, err := r.Canonical()
	if err != nil {
		// Unreachable: every member is now a string, a number or null.
		panic("audit: " + err.Error())
	}
	return c
}

// appendCanonical writes the record's RFC 8785 form directly: its members
// in sorted order, the body through rar/canonical (which gives jcs's bytes
// for what it accepts). It reports false for a record it leaves to jcs.
func (r *Record) appendCanonical(b []byte) ([]byte, bool) {
	body := r.Body
	if len(body) == 0 {
		body = json.RawMessage("null")
	}
	str := func(b []byte, name string, v *string) ([]byte, bool) {
		b = append(b, name...)
		if v == nil {
			return append(b, "null"...), true
		}
		if !utf8.ValidString(*v) {
			return b, false
		}
		return canonical.AppendString(b, *v), true
	}
	var ok bool
	// RFC 8785 §3.2.3: members sorted by name (all ASCII here).
	if b, ok = str(append(b, '{'), `"actor":`, &r.Actor); !ok {
		return nil, false
	}
	if b, ok = str(b, `,"agent_id":`, r.AgentID); !ok {
		return nil, false
	}
	if b, ok = str(b, `,"at":`, &r.At); !ok {
		return nil, false
	}
	b = append(b, `,"body":`...)
	if string(body) == "null" {
		b = append(b, "null"...)
	} else {
		c, err := canonical.Object(body)
		if err != nil {
			return nil, false
		}
		b = append(b, c...)
	}
	b = append(b, `,"id":`...)
	if r.ID < -(1<<53) || r.ID > 1<<53 {
		return nil, false // beyond exact doubles: jcs's spelling
	}
	b = strconv.AppendInt(b, r.ID, 10)
	if b, ok = str(b, `,"kind":`, &r.Kind); !ok {
		return nil, false
	}
	for _, m := range []struct {
		name string
		v    *string
	}{{`,"request_id":`, r.RequestID}, {`,"subject":`, r.Subject}, {`,"user_id":`, r.UserID}} {
		if b, ok = str(b, m.name, m.v); !ok {
			return nil, false
		}
	}
	return append(b, '}'), true
}

// Link is the chain hash after prev of an event whose canonical form is
// canon.
func Link(prev Hash, canon []byte) Hash {
	h := sha256.New()
	h.Write(prev[:])
	h.Write(canon)
	var out Hash
	h.Sum(out[:0])
	return out
}

// Next is the chain hash after prev of r.
func Next(prev Hash, r *Record) (Hash, error) {
	c, err := r.Canonical()
	if err != nil {
		return Hash{}, err
	}
	return Link(prev, c), nil
}
