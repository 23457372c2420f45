package approvals

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/go-webauthn/webauthn/protocol"

	"github.com/countersign/countersign/internal/softauthn"
)

const (
	evRPID   = "countersign.example.com"
	evOrigin = "https://countersign.example.com"
	evReqID  = "6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b"
	evHash   = "n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg"
)

var evOrigins = []string{evOrigin}

// TestStepUpChallenge pins the challenge's formula: a third party that
// recomputes it by hand from the spec must get these bytes.
func TestStepUpChallenge(t *testing.T) {
	nonce := []byte{0, 1, 2, 0xff}
	want := sha256.Sum256([]byte("countersign-step-up\n" + evReqID + "\n" + evHash + "\n\x00\x01\x02\xff"))
	got := StepUpChallenge(evReqID, evHash, nonce)
	if hex.EncodeToString(got) != hex.EncodeToString(want[:]) {
		t.Fatalf("StepUpChallenge = %x, want %x", got, want)
	}
	for name, other := range map[string][]byte{
		"request id":   StepUpChallenge("6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4c", evHash, nonce),
		"details hash": StepUpChallenge(evReqID, evHash[1:], nonce),
		"nonce":        StepUpChallenge(evReqID, evHash, nonce[1:]),
		// Moving a byte across the separator changes the challenge.
		"separator": StepUpChallenge(evReqID, evHash+"\n", nonce[1:]),
	} {
		if string(other) == string(got) {
			t.Errorf("changing the %s leaves the challenge as it was", name)
		}
	}
}

// newAuthn is a software authenticator of kind "es256" or "ed25519".
func newAuthn(t *testing.T, kind string) *softauthn.Authenticator {
	t.Helper()
	var a *softauthn.Authenticator
	var err error
	switch kind {
	case "es256":
		a, err = softauthn.NewES256()
	case "ed25519":
		a, err = softauthn.NewEd25519()
	default:
		t.Fatalf("no authenticator %q", kind)
	}
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// stepUp is the evidence authenticator a makes, as the approver pages store
// it, for the step-up of request evReqID with details evHash.
func stepUp(t *testing.T, a *softauthn.Authenticator, o softauthn.Options) StepUpEvidence {
	t.Helper()
	nonce := []byte("a server nonce of 32 bytes......")
	if o.RPID == "" {
		o.RPID = evRPID
	}
	if o.Origin == "" {
		o.Origin = evOrigin
	}
	as, err := a.Get(StepUpChallenge(evReqID, evHash, nonce), o)
	if err != nil {
		t.Fatal(err)
	}
	return StepUpEvidence{ID: 1, RequestID: evReqID, UserID: "usr_alice", DetailsHash: evHash, CredentialID: a.CredentialID,
		AuthenticatorData: as.AuthenticatorData, ClientDataJSON: as.ClientDataJSON, Signature: as.Signature, Nonce: nonce}
}

// TestVerifyEvidence: good evidence passes every check; each way of making
// it bad fails, and the error names the first check it fails.
func TestVerifyEvidence(t *testing.T) {
	for _, kind := range []string{"es256", "ed25519"} {
		t.Run(kind, func(t *testing.T) {
			a := newAuthn(t, kind)
			other := newAuthn(t, kind)
			good := stepUp(t, a, softauthn.Options{})

			report, err := VerifyEvidence(good, a.PublicKey, evRPID, evOrigins)
			if err != nil || !report.OK() {
				t.Fatalf("good evidence: %v\n%+v", err, report.Checks)
			}
			wantNames := []string{CheckCredential, CheckClientData, CheckType, CheckChallenge, CheckOrigin, CheckCrossOrigin,
				CheckAuthData, CheckRPID, CheckUserPresent, CheckUserVerified, CheckBackupState, CheckSignature}
			var names []string
			for _, c := range report.Checks {
				names = append(names, c.Name)
				if c.Detail == "" {
					t.Errorf("check %s has no detail", c.Name)
				}
			}
			if !slices.Equal(names, wantNames) {
				t.Fatalf("checks %q, want %q", names, wantNames)
			}

			for _, tc := range []struct {
				name   string
				edit   func(e *StepUpEvidence) // the stored evidence tampered with
				key    []byte                  // nil: a's
				rpID   string                  // "": evRPID
				origin string                  // "": evOrigin
				check  string                  // the first check to fail
				detail string                  // in the error
			}{
				{name: "changed details hash", edit: func(e *StepUpEvidence) { e.DetailsHash = "x" + e.DetailsHash[1:] },
					check: CheckChallenge, detail: "does not match the request's id, details hash and nonce"},
				{name: "changed nonce", edit: func(e *StepUpEvidence) { e.Nonce = append(slices.Clone(e.Nonce), 0) }, check: CheckChallenge},
				{name: "changed request id", edit: func(e *StepUpEvidence) { e.RequestID = "00000000-0000-4000-8000-000000000000" }, check: CheckChallenge},
				{name: "flipped signature byte", edit: func(e *StepUpEvidence) { e.Signature = flip(e.Signature, len(e.Signature)-1) },
					check: CheckSignature, detail: "does not verify with the passkey's public key"},
				{name: "another credential's public key", key: other.PublicKey, check: CheckSignature},
				{name: "UV flag cleared in storage", edit: func(e *StepUpEvidence) { e.AuthenticatorData = clearBit(e.AuthenticatorData, 32, 1<<2) },
					check: CheckUserVerified, detail: "the UV flag is not set"},
				{name: "wrong rp id", rpID: "evil.example.com", check: CheckRPID, detail: "rpIdHash is not the SHA-256 of evil.example.com"},
				{name: "wrong origin", origin: "https://evil.example.com", check: CheckOrigin, detail: `"https://countersign.example.com" is not https://evil.example.com`},
				{name: "changed client data", edit: func(e *StepUpEvidence) {
					e.ClientDataJSON = []byte(strings.Replace(string(e.ClientDataJSON), `"crossOrigin":false`, `"crossOrigin":false `, 1))
				}, check: CheckSignature},
				{name: "changed sign count", edit: func(e *StepUpEvidence) { e.AuthenticatorData = flip(e.AuthenticatorData, 36) }, check: CheckSignature},
				{name: "short authenticator data", edit: func(e *StepUpEvidence) { e.AuthenticatorData = e.AuthenticatorData[:36] },
					check: CheckAuthData, detail: "is 36 bytes"},
				{name: "client data not JSON", edit: func(e *StepUpEvidence) { e.ClientDataJSON = []byte("{") }, check: CheckClientData},
				{name: "client data not UTF-8", edit: func(e *StepUpEvidence) { e.ClientDataJSON = []byte("{\"type\":\"\xff\"}") }, check: CheckClientData},
				{name: "no credential id", edit: func(e *StepUpEvidence) { e.CredentialID = nil }, check: CheckCredential, detail: "names no credential"},
				{name: "no passkey for the credential id", key: []byte{}, check: CheckCredential, detail: "no passkey has credential id"},
				{name: "public key not COSE", key: []byte("not a key"), check: CheckCredential},
			} {
				t.Run(tc.name, func(t *testing.T) {
					e := good
					if tc.edit != nil {
						tc.edit(&e)
					}
					key := a.PublicKey
					if tc.key != nil {
						key = tc.key
					}
					rpID, origins := evRPID, evOrigins
					if tc.rpID != "" {
						rpID = tc.rpID
					}
					if tc.origin != "" {
						origins = []string{tc.origin}
					}
					report, err := VerifyEvidence(e, key, rpID, origins)
					checkFailure(t, report, err, tc.check, tc.detail)
				})
			}

			// An authenticator that signs what it should not: the signature
			// verifies, and the check of what it signed fails.
			for _, tc := range []struct {
				name   string
				opts   softauthn.Options
				check  string
				detail string
			}{
				{"did not verify the user", softauthn.Options{Flags: softauthn.FlagUP}, CheckUserVerified, "the UV flag is not set"},
				{"user not present", softauthn.Options{Flags: softauthn.FlagUV}, CheckUserPresent, "the UP flag is not set"},
				{"backed up but not backup eligible", softauthn.Options{Flags: softauthn.FlagUP | softauthn.FlagUV | softauthn.FlagBS}, CheckBackupState, "BS is set without BE"},
				{"wrong type", softauthn.Options{Type: "webauthn.create"}, CheckType, `is "webauthn.create", not "webauthn.get"`},
				{"wrong origin", softauthn.Options{Origin: "https://countersign.example.com.evil.example"}, CheckOrigin, "is not https://countersign.example.com"},
				{"wrong rp id", softauthn.Options{RPID: "example.com"}, CheckRPID, "rpIdHash is not the SHA-256 of countersign.example.com"},
				{"cross-origin frame", softauthn.Options{CrossOrigin: true}, CheckCrossOrigin, "cross-origin frame"},
			} {
				t.Run("signed/"+tc.name, func(t *testing.T) {
					e := stepUp(t, a, tc.opts)
					report, err := VerifyEvidence(e, a.PublicKey, evRPID, evOrigins)
					checkFailure(t, report, err, tc.check, tc.detail)
					if sig := report.Checks[len(report.Checks)-1]; sig.Name != CheckSignature || !sig.OK {
						t.Errorf("the signature of an honestly signed assertion: %+v", sig)
					}
				})
			}
		})
	}
}

// checkFailure asserts that the first failed check is check, that err is an
// *EvidenceError naming it (with detail, when given), and that the report
// says so too.
func checkFailure(t *testing.T, report EvidenceReport, err error, check, detail string) {
	t.Helper()
	var ee *EvidenceError
	if !errors.As(err, &ee) {
		t.Fatalf("err = %v, want an *EvidenceError; checks %+v", err, report.Checks)
	}
	if ee.Check != check || !strings.Contains(ee.Detail, detail) {
		t.Fatalf("err = %q, want check %q with %q", err, check, detail)
	}
	if !strings.HasPrefix(err.Error(), "evidence: "+check+": ") {
		t.Errorf("err = %q, want it to start with %q", err, "evidence: "+check+": ")
	}
	if report.OK() || report.Err() == nil || report.Err().Error() != err.Error() {
		t.Errorf("report OK %v, Err %v; want not OK and %v", report.OK(), report.Err(), err)
	}
}

func flip(b []byte, i int) []byte {
	b = slices.Clone(b)
	b[i] ^= 0x01
	return b
}

func clearBit(b []byte, i int, bit byte) []byte {
	b = slices.Clone(b)
	b[i] &^= bit
	return b
}

// TestEvidenceAMR: a device-bound passkey is hwk, a synced one swk; user
// presence is user; nothing is claimed for how the user was verified.
func TestEvidenceAMR(t *testing.T) {
	authData := func(flags byte) []byte {
		b := make([]byte, 37)
		b[32] = flags
		return b
	}
	const up, uv, be, bs = softauthn.FlagUP, softauthn.FlagUV, softauthn.FlagBE, softauthn.FlagBS
	for _, tc := range []struct {
		name           string
		authData       []byte
		backupEligible bool
		want           []string
	}{
		{"device-bound, UP and UV", authData(up | uv), false, []string{"hwk", "user"}},
		{"synced, stored as backup eligible", authData(up | uv), true, []string{"swk", "user"}},
		{"synced, BE in the flags", authData(up | uv | be | bs), false, []string{"swk", "user"}},
		{"no user presence", authData(uv), false, []string{"hwk"}},
		{"malformed authenticator data", authData(up | uv)[:36], false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := EvidenceAMR(tc.authData, tc.backupEligible); !slices.Equal(got, tc.want) {
				t.Fatalf("EvidenceAMR = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestEvidenceAgreesWithGoWebauthn: the assertions of the test authenticator
// pass go-webauthn's own ceremony verification (what the approver pages run)
// and VerifyEvidence alike, and a tampered one fails both: the offline check
// and the library agree on what an assertion is.
func TestEvidenceAgreesWithGoWebauthn(t *testing.T) {
	for _, kind := range []string{"es256", "ed25519"} {
		t.Run(kind, func(t *testing.T) {
			a := newAuthn(t, kind)
			e := stepUp(t, a, softauthn.Options{})
			challenge := base64.RawURLEncoding.EncodeToString(StepUpChallenge(e.RequestID, e.DetailsHash, e.Nonce))
			library := func(e StepUpEvidence) error {
				b64 := base64.RawURLEncoding.EncodeToString
				body, _ := json.Marshal(map[string]any{"id": b64(e.CredentialID), "rawId": b64(e.CredentialID), "type": "public-key",
					"response": map[string]string{"authenticatorData": b64(e.AuthenticatorData), "clientDataJSON": b64(e.ClientDataJSON),
						"signature": b64(e.Signature)}})
				parsed, err := protocol.ParseCredentialRequestResponseBytes(body)
				if err != nil {
					return err
				}
				return parsed.Verify(challenge, evRPID, "", evOrigins, nil, nil, protocol.TopOriginExplicitVerificationMode,
					false, true, true, a.PublicKey, protocol.SignaturePolicy{})
			}
			if err := library(e); err != nil {
				t.Fatalf("go-webauthn refuses the test authenticator's assertion: %v", err)
			}
			if _, err := VerifyEvidence(e, a.PublicKey, evRPID, evOrigins); err != nil {
				t.Fatalf("VerifyEvidence: %v", err)
			}
			e.Signature = flip(e.Signature, len(e.Signature)-1)
			if err := library(e); err == nil {
				t.Fatal("go-webauthn accepts a flipped signature")
			}
			if _, err := VerifyEvidence(e, a.PublicKey, evRPID, evOrigins); err == nil {
				t.Fatal("VerifyEvidence accepts a flipped signature")
			}
		})
	}
}
