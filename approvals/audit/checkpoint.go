package audit

import (
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/gowebpki/jcs"
)

// CheckpointType is the JWS "typ" header of a checkpoint (RFC 7515 §4.1.9).
const CheckpointType = "countersign-audit-checkpoint"

// Claims is what a checkpoint signs: the chain's head after position
// Position, and when the batch was sealed.
type Claims struct {
	Position int64  `json:"position"`
	Head     Hash   `json:"head"`
	SealedAt string `json:"sealed_at"`
}

// Checkpoint is a signed chain head.
type Checkpoint struct {
	Claims
	KID string `json:"kid"`
	// JWS is the compact ES256 JWS over the JCS of Claims.
	JWS string `json:"jws"`
}

// Sign makes the checkpoint of c with key (a P-256 private key) named kid.
func Sign(c Claims, key crypto.Signer, kid string) (Checkpoint, error) {
	payload, err := c.canonical()
	if err != nil {
		return Checkpoint{}, err
	}
	opts := (&jose.SignerOptions{}).WithType(CheckpointType)
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, opts)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("audit: checkpoint signer: %w", err)
	}
	obj, err := s.Sign(payload)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("audit: sign checkpoint: %w", err)
	}
	jws, err := obj.CompactSerialize()
	if err != nil {
		return Checkpoint{}, fmt.Errorf("audit: sign checkpoint: %w", err)
	}
	return Checkpoint{Claims: c, KID: kid, JWS: jws}, nil
}

func (c Claims) canonical() ([]byte, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("audit: checkpoint: %w", err)
	}
	return jcs.Transform(b)
}

// ErrUnknownKey is returned by Verify for a checkpoint signed by a key that
// is not in the key set.
var ErrUnknownKey = errors.New("audit: checkpoint signed by a key not in the key set")

// Verify checks the checkpoint's signature against keys and that what it
// signs is its Claims.
func (c Checkpoint) Verify(keys *jose.JSONWebKeySet) error {
	obj, err := jose.ParseSignedCompact(c.JWS, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return fmt.Errorf("audit: checkpoint: %w", err)
	}
	if len(obj.Signatures) != 1 {
		return errors.New("audit: checkpoint: want exactly one signature")
	}
	h := obj.Signatures[0].Protected
	if h.KeyID != c.KID {
		return fmt.Errorf("audit: checkpoint: signed by kid %q, recorded as %q", h.KeyID, c.KID)
	}
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != CheckpointType {
		return fmt.Errorf("audit: checkpoint: typ %q, want %q", typ, CheckpointType)
	}
	found := keys.Key(c.KID)
	if len(found) == 0 {
		return fmt.Errorf("%w (kid %q)", ErrUnknownKey, c.KID)
	}
	pub := found[0].Public()
	if !pub.Valid() {
		return fmt.Errorf("audit: checkpoint: kid %q is not a public key", c.KID)
	}
	payload, err := obj.Verify(pub.Key)
	if err != nil {
		return fmt.Errorf("audit: checkpoint: %w", err)
	}
	want, err := c.Claims.canonical()
	if err != nil {
		return err
	}
	if string(payload) != string(want) {
		return errors.New("audit: checkpoint: the signed position, head or time differ from the recorded ones")
	}
	return nil
}

// ParseTime reads a SealedAt or a Record's At.
func ParseTime(s string) (time.Time, error) { return time.Parse(TimeFormat, s) }
