package approvals

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/go-webauthn/webauthn/protocol/webauthncose"
)

// stepUpDomain separates step-up challenges from any other SHA-256 input.
const stepUpDomain = "countersign-step-up\n"

// StepUpChallenge is the WebAuthn challenge of a step-up approval of request
// requestID (its UUID text) whose authorization_details_hash is detailsHash,
// with the server's random nonce (raw bytes):
//
//	SHA-256("countersign-step-up\n" || requestID || "\n" || detailsHash || "\n" || nonce)
//
// Neither text can hold a newline (a UUID; base64url), so the input is
// unambiguous. Anyone holding the three values can recompute it.
func StepUpChallenge(requestID, detailsHash string, nonce []byte) []byte {
	h := sha256.New()
	h.Write([]byte(stepUpDomain))
	h.Write([]byte(requestID))
	h.Write([]byte{'\n'})
	h.Write([]byte(detailsHash))
	h.Write([]byte{'\n'})
	h.Write(nonce)
	return h.Sum(nil)
}

// Authenticator data (WebAuthn Level 3 §6.1): rpIdHash (32 bytes), flags (1),
// signCount (4, big-endian), then attested credential data and extensions
// when their flags say so. An assertion's signature covers all of it, so
// nothing past signCount needs parsing here.
const (
	authDataMinLen = 37
	authDataFlags  = 32

	flagUP byte = 1 << 0 // user present
	flagUV byte = 1 << 2 // user verified
	flagBE byte = 1 << 3 // backup eligible
	flagBS byte = 1 << 4 // backed up
)

// maxCredentialID is the longest credential ID a Relying Party accepts
// (WebAuthn Level 3 §7.1: "Verify that the credentialId is ≤ 1023 bytes").
const maxCredentialID = 1023

// Names of the checks of VerifyEvidence, in the order they run.
const (
	CheckCredential   = "credential"
	CheckClientData   = "client data"
	CheckType         = "type"
	CheckChallenge    = "challenge"
	CheckOrigin       = "origin"
	CheckCrossOrigin  = "cross-origin"
	CheckAuthData     = "authenticator data"
	CheckRPID         = "rp id"
	CheckUserPresent  = "user present"
	CheckUserVerified = "user verified"
	CheckBackupState  = "backup state"
	CheckSignature    = "signature"
)

// EvidenceCheck is one check of a piece of step-up evidence: its name, whether
// it passed and, either way, what it found.
type EvidenceCheck struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// EvidenceReport lists every check run on a piece of step-up evidence, in
// order. A check that could not run because an earlier one failed is listed
// as failed, its detail saying "not checked: …".
type EvidenceReport struct {
	Checks []EvidenceCheck `json:"checks"`
}

// OK reports whether every check passed.
func (r EvidenceReport) OK() bool {
	return !slices.ContainsFunc(r.Checks, func(c EvidenceCheck) bool { return !c.OK })
}

// Err is the first failed check as an *EvidenceError, or nil.
func (r EvidenceReport) Err() error {
	for _, c := range r.Checks {
		if !c.OK {
			return &EvidenceError{Check: c.Name, Detail: c.Detail}
		}
	}
	return nil
}

func (r *EvidenceReport) add(name string, ok bool, format string, args ...any) bool {
	r.Checks = append(r.Checks, EvidenceCheck{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
	return ok
}

// EvidenceError names the first check a piece of step-up evidence failed.
type EvidenceError struct {
	Check  string
	Detail string
}

func (e *EvidenceError) Error() string { return "evidence: " + e.Check + ": " + e.Detail }

// collectedClientData is the part of CollectedClientData (WebAuthn Level 3
// §5.8.1) that is verified.
type collectedClientData struct {
	Type        string `json:"type"`
	Challenge   string `json:"challenge"`
	Origin      string `json:"origin"`
	CrossOrigin *bool  `json:"crossOrigin"`
	TopOrigin   string `json:"topOrigin"`
}

// VerifyEvidence re-verifies step-up evidence after the fact: the steps of
// WebAuthn Level 3 §7.2 (verifying an authentication assertion) that apply
// to a stored assertion. publicKey is the COSE public key (as go-webauthn
// stores it, Credential.PublicKey) of the passkey the caller looked up by
// e.CredentialID, or nil when none has it; rpID and origins are the Relying
// Party's. Not checked, because they cannot be after the fact: the user
// handle, the signature counter (the credential's has moved on since), and
// that the nonce was issued once and consumed — the approver pages enforce
// those during the ceremony.
//
// It returns the report of every check and, when one failed, an
// *EvidenceError naming the first.
func VerifyEvidence(e StepUpEvidence, publicKey []byte, rpID string, origins []string) (EvidenceReport, error) {
	var r EvidenceReport

	// §7.2: look up the credential public key by credential.id.
	var key any
	switch {
	case len(e.CredentialID) == 0:
		r.add(CheckCredential, false, "the evidence names no credential")
	case len(e.CredentialID) > maxCredentialID:
		r.add(CheckCredential, false, "the credential id is %d bytes, more than %d", len(e.CredentialID), maxCredentialID)
	case len(publicKey) == 0:
		r.add(CheckCredential, false, "no passkey has credential id %s", shortID(e.CredentialID))
	default:
		k, err := webauthncose.ParsePublicKey(publicKey)
		if err != nil {
			r.add(CheckCredential, false, "the public key of credential %s is not one go-webauthn can use: %v", shortID(e.CredentialID), err)
		} else {
			key = k
			r.add(CheckCredential, true, "%s key of credential %s", keyAlg(k), shortID(e.CredentialID))
		}
	}

	// §7.2: JSONtext = UTF-8 decode(cData); C = parse JSON(JSONtext).
	var c collectedClientData
	cd := bytes.TrimPrefix(e.ClientDataJSON, []byte("\xEF\xBB\xBF")) // UTF-8 decode drops a BOM
	parsed := false
	switch {
	case !utf8.Valid(cd):
		r.add(CheckClientData, false, "is not UTF-8")
	default:
		if err := json.Unmarshal(cd, &c); err != nil {
			r.add(CheckClientData, false, "is not a JSON object of client data: %v", err)
		} else {
			parsed = r.add(CheckClientData, true, "%d bytes of JSON", len(e.ClientDataJSON))
		}
	}
	if parsed {
		// §7.2: "Verify that the value of C.type is the string webauthn.get."
		if c.Type == "webauthn.get" {
			r.add(CheckType, true, "webauthn.get")
		} else {
			r.add(CheckType, false, "is %q, not \"webauthn.get\"", c.Type)
		}

		// §7.2: "Verify that the value of C.challenge equals the base64url
		// encoding of pkOptions.challenge."
		want := base64.RawURLEncoding.EncodeToString(StepUpChallenge(e.RequestID, e.DetailsHash, e.Nonce))
		if c.Challenge == want {
			r.add(CheckChallenge, true, "derived from request %s, details hash %s and the nonce", e.RequestID, e.DetailsHash)
		} else {
			r.add(CheckChallenge, false, "does not match the request's id, details hash and nonce")
		}

		// §7.2: "Verify that the value of C.origin is an origin expected by
		// the Relying Party."
		if slices.Contains(origins, c.Origin) {
			r.add(CheckOrigin, true, "%s", c.Origin)
		} else {
			r.add(CheckOrigin, false, "%q is not %s", c.Origin, strings.Join(origins, " or "))
		}

		// §7.2: "If C.topOrigin is present: verify that the Relying Party
		// expects this credential to be used within an iframe". The approver
		// pages are never framed (frame-ancestors 'none').
		switch {
		case c.CrossOrigin != nil && *c.CrossOrigin:
			r.add(CheckCrossOrigin, false, "the assertion was made in a cross-origin frame")
		case c.TopOrigin != "":
			r.add(CheckCrossOrigin, false, "the assertion was made in a frame of %q", c.TopOrigin)
		default:
			r.add(CheckCrossOrigin, true, "made in a top-level page")
		}
	} else {
		for _, name := range []string{CheckType, CheckChallenge, CheckOrigin, CheckCrossOrigin} {
			r.add(name, false, "not checked: the client data does not parse")
		}
	}

	ad := e.AuthenticatorData
	if len(ad) >= authDataMinLen {
		flags := ad[authDataFlags]
		r.add(CheckAuthData, true, "%d bytes, flags %08b, sign count %d", len(ad), flags, binary.BigEndian.Uint32(ad[33:37]))

		// §7.2: "Verify that the rpIdHash in authData is the SHA-256 hash of
		// the RP ID expected by the Relying Party."
		rpIDHash := sha256.Sum256([]byte(rpID))
		if bytes.Equal(ad[:32], rpIDHash[:]) {
			r.add(CheckRPID, true, "rpIdHash is the SHA-256 of %s", rpID)
		} else {
			r.add(CheckRPID, false, "rpIdHash is not the SHA-256 of %s", rpID)
		}

		// §7.2: "Verify that the UP bit of the flags in authData is set." and
		// "If user verification was determined to be required, verify that
		// the UV bit of the flags in authData is set." Step-up requires it
		// (userVerification: required).
		r.add(CheckUserPresent, flags&flagUP != 0, "%s", flagText(flags&flagUP != 0, "the user was present", "the UP flag is not set"))
		r.add(CheckUserVerified, flags&flagUV != 0, "%s", flagText(flags&flagUV != 0, "the authenticator verified the user", "the UV flag is not set: the authenticator did not verify the user"))

		// §7.2: "If the BE bit of the flags in authData is not set, verify
		// that the BS bit is not set."
		if flags&flagBE == 0 && flags&flagBS != 0 {
			r.add(CheckBackupState, false, "BS is set without BE")
		} else {
			r.add(CheckBackupState, true, "%s", flagText(flags&flagBE != 0, "backup eligible (a synced passkey)", "device-bound"))
		}
	} else {
		r.add(CheckAuthData, false, "is %d bytes, shorter than the %d of rpIdHash, flags and signCount (§6.1)", len(ad), authDataMinLen)
		for _, name := range []string{CheckRPID, CheckUserPresent, CheckUserVerified, CheckBackupState} {
			r.add(name, false, "not checked: the authenticator data is malformed")
		}
	}

	// §7.2: "Let hash be the result of computing a hash over the cData using
	// SHA-256. Using credentialRecord.publicKey, verify that sig is a valid
	// signature over the binary concatenation of authData and hash."
	if key == nil {
		r.add(CheckSignature, false, "not checked: no usable public key")
	} else {
		hash := sha256.Sum256(e.ClientDataJSON)
		signed := append(slices.Clip(e.AuthenticatorData), hash[:]...)
		ok, err := webauthncose.VerifySignature(key, signed, e.Signature)
		switch {
		case ok && err == nil:
			r.add(CheckSignature, true, "%s signature over the authenticator data and the client data hash", keyAlg(key))
		case err != nil:
			r.add(CheckSignature, false, "does not verify with the passkey's public key: %v", err)
		default:
			r.add(CheckSignature, false, "does not verify with the passkey's public key")
		}
	}
	return r, r.Err()
}

// EvidenceAMR is what a step-up assertion says of how the user
// authenticated, as RFC 8176 §2 values, from its authenticator data (flags,
// WebAuthn Level 3 §6.1) and whether its passkey is backup eligible (as
// stored at registration):
//
//   - "swk" (proof of possession of a software-secured key) for a
//     backup-eligible passkey, whose key can be synced off the device; "hwk"
//     (of a hardware-secured key) for one that is not, either by the stored
//     backupEligible or the BE flag. Without attestation a device-bound key is
//     the most the flags can say of hardware.
//   - "user" (user presence test) when UP is set.
//
// UV says the authenticator verified the user locally, but not how: a PIN
// ("pin"), a fingerprint ("fpt"), a face ("face") or a device pattern look
// the same in the flags, so none of them is claimed; nor is "mfa", which
// would rest on that same guess. authData shorter than §6.1's fixed part
// yields nil. It does not verify anything: use it on evidence VerifyEvidence
// accepted.
func EvidenceAMR(authData []byte, backupEligible bool) []string {
	if len(authData) < authDataMinLen {
		return nil
	}
	flags := authData[authDataFlags]
	amr := []string{"hwk"}
	if backupEligible || flags&flagBE != 0 {
		amr[0] = "swk"
	}
	if flags&flagUP != 0 {
		amr = append(amr, "user")
	}
	return amr
}

func flagText(set bool, yes, no string) string {
	if set {
		return yes
	}
	return no
}

// keyAlg names a parsed COSE key's algorithm (e.g. ES256, EdDSA).
func keyAlg(key any) string {
	var alg int64
	switch k := key.(type) {
	case webauthncose.EC2PublicKeyData:
		alg = k.Algorithm
	case webauthncose.OKPPublicKeyData:
		alg = k.Algorithm
	case webauthncose.RSAPublicKeyData:
		alg = k.Algorithm
	default:
		return "COSE"
	}
	return webauthncose.COSEAlgorithmIdentifier(alg).String()
}

// shortID is a credential id as base64url, cut to stay readable.
func shortID(id []byte) string {
	s := base64.RawURLEncoding.EncodeToString(id)
	if len(s) > 22 {
		s = s[:20] + "…"
	}
	return s
}
