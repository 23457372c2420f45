// Package softauthn is a software WebAuthn authenticator for tests: it holds
// a key pair, gives its public key in COSE form as go-webauthn stores it
// (Credential.PublicKey), and makes assertions (WebAuthn Level 3 §6.3.3
// authenticatorGetAssertion) over any challenge, with the flags, RP ID,
// origin and client data type a test asks for, so that tests can make both
// good step-up evidence and each kind of bad one.
//
// It is for tests only: its keys live in memory and it verifies nobody.
package softauthn

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/go-webauthn/webauthn/protocol/webauthncbor"
	"github.com/go-webauthn/webauthn/protocol/webauthncose"
)

// Flags of authenticator data (WebAuthn Level 3 §6.1).
const (
	FlagUP byte = 1 << 0 // user present
	FlagUV byte = 1 << 2 // user verified
	FlagBE byte = 1 << 3 // backup eligible
	FlagBS byte = 1 << 4 // backed up
)

// Authenticator is one credential of a software authenticator.
type Authenticator struct {
	CredentialID []byte
	// PublicKey is the credential public key as a COSE_Key (§6.5.1.1).
	PublicKey []byte
	// BackupEligible makes the default flags carry BE and BS: a synced
	// passkey.
	BackupEligible bool
	// SignCount is the signature counter of the next assertion.
	SignCount uint32

	sign func(data []byte) ([]byte, error)
}

// NewES256 returns an authenticator with a new P-256 ECDSA key (COSE alg -7).
func NewES256() (*Authenticator, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	pub, err := key.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		return nil, err
	}
	cose, err := webauthncbor.Marshal(webauthncose.EC2PublicKeyData{
		PublicKeyData: webauthncose.PublicKeyData{KeyType: int64(webauthncose.EllipticKey), Algorithm: int64(webauthncose.AlgES256)},
		Curve:         int64(webauthncose.P256),
		XCoord:        pub[1:33],
		YCoord:        pub[33:],
	})
	if err != nil {
		return nil, fmt.Errorf("softauthn: encode key: %w", err)
	}
	return newAuthenticator(cose, func(data []byte) ([]byte, error) {
		digest := sha256.Sum256(data)
		return ecdsa.SignASN1(rand.Reader, key, digest[:])
	})
}

// NewEd25519 returns an authenticator with a new Ed25519 key (COSE OKP,
// alg -8 EdDSA, crv 6).
func NewEd25519() (*Authenticator, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	cose, err := webauthncbor.Marshal(webauthncose.OKPPublicKeyData{
		PublicKeyData: webauthncose.PublicKeyData{KeyType: int64(webauthncose.OctetKey), Algorithm: int64(webauthncose.AlgEdDSA)},
		Curve:         int64(webauthncose.Ed25519),
		XCoord:        pub,
	})
	if err != nil {
		return nil, fmt.Errorf("softauthn: encode key: %w", err)
	}
	return newAuthenticator(cose, func(data []byte) ([]byte, error) { return ed25519.Sign(priv, data), nil })
}

func newAuthenticator(cose []byte, sign func([]byte) ([]byte, error)) (*Authenticator, error) {
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	return &Authenticator{CredentialID: id, PublicKey: cose, SignCount: 1, sign: sign}, nil
}

// Options shape one assertion. The zero value of each field is what an
// honest authenticator in a same-origin page gives, except RPID and Origin,
// which a test always sets.
type Options struct {
	RPID   string
	Origin string
	// Type is the client data type; "" is "webauthn.get".
	Type string
	// Flags are the authenticator data flags; 0 is UP|UV, plus BE|BS for a
	// backup-eligible credential.
	Flags       byte
	CrossOrigin bool
}

// Assertion is what an authenticator and its client return (§5.2.2).
type Assertion struct {
	AuthenticatorData []byte
	ClientDataJSON    []byte
	Signature         []byte
}

// Get makes an assertion over challenge: authenticator data per §6.1
// (rpIdHash, flags, signCount; no attested credential data or extensions),
// client data JSON per §5.8.1 as a browser serialises it (§5.8.1.1), and a
// signature over authenticatorData || SHA-256(clientDataJSON) (§6.3.3 step
// 11).
func (a *Authenticator) Get(challenge []byte, o Options) (Assertion, error) {
	typ := o.Type
	if typ == "" {
		typ = "webauthn.get"
	}
	flags := o.Flags
	if flags == 0 {
		flags = FlagUP | FlagUV
		if a.BackupEligible {
			flags |= FlagBE | FlagBS
		}
	}
	cd, err := json.Marshal(struct {
		Type        string `json:"type"`
		Challenge   string `json:"challenge"`
		Origin      string `json:"origin"`
		CrossOrigin bool   `json:"crossOrigin"`
	}{typ, base64.RawURLEncoding.EncodeToString(challenge), o.Origin, o.CrossOrigin})
	if err != nil {
		return Assertion{}, err
	}
	rpIDHash := sha256.Sum256([]byte(o.RPID))
	authData := append(rpIDHash[:], flags)
	authData = binary.BigEndian.AppendUint32(authData, a.SignCount)
	a.SignCount++
	cdHash := sha256.Sum256(cd)
	sig, err := a.sign(append(authData[:len(authData):len(authData)], cdHash[:]...))
	if err != nil {
		return Assertion{}, fmt.Errorf("softauthn: sign: %w", err)
	}
	return Assertion{AuthenticatorData: authData, ClientDataJSON: cd, Signature: sig}, nil
}
