package approvals

import (
	"context"
	"fmt"
	"time"
)

// Checks of stored evidence beyond VerifyEvidence's, run after them.
const (
	// CheckPasskeyOwner: the passkey the evidence names is its user's.
	CheckPasskeyOwner = "passkey owner"
	// CheckRequest: the request's details hash is still the one the
	// evidence was made for.
	CheckRequest = "request"
)

// StoredEvidence is one piece of step-up evidence as stored, re-verified
// against the passkey it names and the request as it stands.
type StoredEvidence struct {
	Evidence  StepUpEvidence
	CreatedAt time.Time
	// AMR is what the evidence says of how its user authenticated
	// (EvidenceAMR), when its passkey was found.
	AMR    []string
	Report EvidenceReport
}

// storedEvidenceSQL reads a request's evidence, newest first, with the
// passkey each names. The passkey is matched by credential id alone, so
// that one belonging to another user is reported as such.
const storedEvidenceSQL = `
SELECT e.id, e.request_id, e.user_id, e.details_hash, e.credential_id, e.authenticator_data, e.client_data_json,
	e.signature, e.nonce, e.created_at, p.public_key, p.user_id AS passkey_user_id, p.backup_eligible
FROM step_up_evidence e
LEFT JOIN passkeys p ON p.credential_id = e.credential_id
WHERE e.request_id = $1
ORDER BY e.created_at DESC, e.id DESC`

// VerifyStoredEvidence re-verifies every piece of step-up evidence stored
// for request requestID, newest first: VerifyEvidence with the public key of
// the passkey it names, then that the passkey is the evidence's user's
// (CheckPasskeyOwner) and that the request's details hash is the one the
// evidence signed (CheckRequest): a request whose hash was changed after its
// approval no longer matches its evidence. rpID and origins are the Relying
// Party's. A request with no evidence gives none; a request id that is not a
// UUID is ErrInvalidInput, an unknown one ErrNotFound.
func (s *Store) VerifyStoredEvidence(ctx context.Context, requestID, rpID string, origins []string) ([]StoredEvidence, error) {
	if _, ok := parseUUID(requestID); !ok {
		return nil, fmt.Errorf("approvals: evidence of %q: %w: a request id is a UUID", requestID, ErrInvalidInput)
	}
	r, err := request(ctx, s.db, requestID)
	if err != nil {
		return nil, err
	}
	var rows []struct {
		StepUpEvidence
		CreatedAt      time.Time `db:"created_at"`
		PublicKey      []byte    `db:"public_key"`
		PasskeyUserID  *string   `db:"passkey_user_id"`
		BackupEligible *bool     `db:"backup_eligible"`
	}
	if err := s.db.SelectContext(ctx, &rows, storedEvidenceSQL, requestID); err != nil {
		return nil, fmt.Errorf("approvals: evidence of %s: %w", requestID, translate(err))
	}
	out := make([]StoredEvidence, 0, len(rows))
	for _, row := range rows {
		e := row.StepUpEvidence
		report, _ := VerifyEvidence(e, row.PublicKey, rpID, origins)
		se := StoredEvidence{Evidence: e, CreatedAt: row.CreatedAt, Report: report}
		switch {
		case row.PasskeyUserID == nil:
			report.add(CheckPasskeyOwner, false, "not checked: no passkey has this credential id")
		case *row.PasskeyUserID != e.UserID:
			report.add(CheckPasskeyOwner, false, "the passkey is %s's, not %s's", *row.PasskeyUserID, e.UserID)
		default:
			report.add(CheckPasskeyOwner, true, "the passkey is %s's", e.UserID)
			se.AMR = EvidenceAMR(e.AuthenticatorData, row.BackupEligible != nil && *row.BackupEligible)
		}
		if r.DetailsHash == e.DetailsHash {
			report.add(CheckRequest, true, "the request's details hash is the one the evidence was made for")
		} else {
			report.add(CheckRequest, false, "the request's details hash %s is not the %s the evidence was made for", r.DetailsHash, e.DetailsHash)
		}
		se.Report = report
		out = append(out, se)
	}
	return out, nil
}
