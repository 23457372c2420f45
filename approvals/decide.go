package approvals

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/lib/pq"
)

// Reviewer is the person reviewing a request, as the approver pages
// authenticated them: their user id and how they signed in (RFC 8176 amr
// values of their session).
type Reviewer struct {
	UserID string
	AMR    []string
}

// ReviewInput is what a reviewer decides: a verdict, an optional reason
// (at most MaxReviewReason characters) and, for a step-up request, the
// evidence of a verified WebAuthn assertion made for it.
type ReviewInput struct {
	Verdict  Verdict
	Reason   string
	Evidence *StepUpEvidence
}

// reviewAttempts bounds the compare-and-swap retries of one review: each
// retry means another review of the same request committed meanwhile.
const reviewAttempts = 4

// Review records a reviewer's verdict on a pending request and applies it
// (ApplyReview): the review, its evidence, the request's new state, their
// events and the agent's ping are one change. It is the only way a request
// is decided by a person. A request that does not exist and one the
// reviewer may not see give the same error (ErrNotFound); the other refusals
// are ApplyReview's.
func (s *Service) Review(ctx context.Context, requestID string, by Reviewer, in ReviewInput) (Request, error) {
	if _, ok := parseUUID(requestID); !ok {
		return Request{}, fmt.Errorf("approvals: review %s: %w", requestID, ErrNotFound)
	}
	for range reviewAttempts {
		out, err := s.review(ctx, requestID, by, in)
		if errors.Is(err, errVersionChanged) {
			continue
		}
		if err != nil {
			return Request{}, err
		}
		s.metrics.reviewed(in.Verdict, out)
		s.logger.InfoContext(ctx, "request reviewed", "request", out, "reviewer", by.UserID, "verdict", in.Verdict)
		return out, nil
	}
	return Request{}, fmt.Errorf("approvals: review %s: %w: too many concurrent reviews", requestID, ErrConflict)
}

// errVersionChanged: another review committed between our read and our
// compare-and-swap.
var errVersionChanged = errors.New("approvals: request changed during review")

// reviewStateSQL reads, in one statement, what ApplyReview needs: the
// request, the database's clock, and the reviewer's groups and status —
// only if the reviewer may see the request, so that one that is not theirs
// is refused as early, and as fast, as one that does not exist.
const reviewStateSQL = `
SELECT now() AS now, reviewer_groups, reviewer_status, set_config('countersign.announce', $3, true) AS announce,
	velocity_lock_shared(requests.agent_id, requests.user_id, requests.types) AS velocity_locked,
	` + requestColumns + `
FROM requests
JOIN LATERAL (SELECT groups AS reviewer_groups, status AS reviewer_status FROM users WHERE users.id = $2) u ON true
WHERE requests.id = $1 AND (requests.user_id = $2
	OR EXISTS (SELECT 1 FROM jsonb_array_elements(requests.quorum) q WHERE q->>'Group' = ANY(u.reviewer_groups)))`

const reviewsSQL = `
SELECT v.request_id, v.reviewer, v.verdict, v.reason, v.amr, v.groups, v.created_at,
	e.id AS "e.id", e.request_id AS "e.request_id", e.user_id AS "e.user_id", e.details_hash AS "e.details_hash"
FROM reviews v LEFT JOIN step_up_evidence e ON e.id = v.evidence_id
WHERE v.request_id = $1
ORDER BY v.created_at, v.reviewer`

const insertEvidenceSQL = `
INSERT INTO step_up_evidence (request_id, user_id, details_hash, credential_id, authenticator_data, client_data_json, signature, nonce)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
RETURNING id`

const insertReviewSQL = `
INSERT INTO reviews (request_id, reviewer, verdict, reason, amr, evidence_id, groups)
VALUES ($1, $2, $3, $4, $5, $6, $7)`

// resolveSQL is the compare-and-swap: it changes the request only if no
// other review changed it since it was read (version), and only while it is
// pending and live. A resolving review clears the notification token, which
// then lives on only in the ping's outbox row.
const resolveSQL = `
WITH before AS (
	SELECT client_notification_token AS before_token FROM requests WHERE id = $1
)
UPDATE requests
SET version = version + 1, state = $3,
	decided_at = CASE WHEN $3 = 'pending' THEN NULL ELSE now() END,
	decided_by = CASE WHEN $3 = 'pending' THEN NULL ELSE $4 END,
	decision_reason = $5, acr = $6, amr = $7,
	client_notification_token = CASE WHEN $3 = 'pending' THEN client_notification_token END
FROM before
WHERE id = $1 AND version = $2 AND state = 'pending' AND expires_at > now()
RETURNING before_token, ` + requestColumns

func (s *Service) review(ctx context.Context, requestID string, by Reviewer, in ReviewInput) (Request, error) {
	var out Request
	var recorded []Event // announced once committed (announceMode)
	suspended := false   // the denial suspended the agent (fatigue guard)
	st := s.store
	st.warm(ctx, &st.reviewStateStmt, &st.reviewsStmt, &st.insertReviewStmt, &st.resolveStmt)
	err := st.change(ctx, func(t *Tx) error {
		var cur struct {
			Now            time.Time      `db:"now"`
			ReviewerGroups pq.StringArray `db:"reviewer_groups"`
			ReviewerStatus string         `db:"reviewer_status"`
			Announce       string         `db:"announce"`        // only where sqlx scans set_config's answer
			VelocityLocked bool           `db:"velocity_locked"` // the admission locks, shared (migration 00021)
			Request
		}
		err := st.reviewStateStmt.getTx(ctx, t, &cur, requestID, by.UserID, s.announceMode())
		if errors.Is(err, sql.ErrNoRows) || err == nil && cur.ReviewerStatus != "active" {
			return fmt.Errorf("approvals: review %s: %w", requestID, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("approvals: review %s: %w", requestID, translate(err))
		}
		var rows []struct {
			Review
			E struct {
				ID          *int64  `db:"id"`
				RequestID   *string `db:"request_id"`
				UserID      *string `db:"user_id"`
				DetailsHash *string `db:"details_hash"`
			} `db:"e"`
		}
		if err := st.reviewsStmt.selectTx(ctx, t, &rows, requestID); err != nil {
			return fmt.Errorf("approvals: review %s: %w", requestID, err)
		}
		reviews := make([]Review, len(rows))
		for i, row := range rows {
			reviews[i] = row.Review
			if row.E.ID != nil {
				reviews[i].Evidence = &StepUpEvidence{ID: *row.E.ID, RequestID: *row.E.RequestID, UserID: *row.E.UserID, DetailsHash: *row.E.DetailsHash}
			}
		}
		rev := Review{RequestID: requestID, Reviewer: by.UserID, Verdict: in.Verdict, Reason: in.Reason,
			AMR: pq.StringArray(nonNil(by.AMR)), Groups: cur.ReviewerGroups, Evidence: in.Evidence}
		if in.Evidence != nil && rev.Verdict == VerdictApprove {
			// What the evidence's authenticator data proves (RFC 8176: hwk or
			// swk, user), beside what the reviewer's session says.
			for _, m := range EvidenceAMR(in.Evidence.AuthenticatorData, false) {
				if !slices.Contains(rev.AMR, m) {
					rev.AMR = append(rev.AMR, m)
				}
			}
		}
		if !eligible(cur.Request, rev) {
			// Before anything else: a reviewer who may not see the request
			// learns nothing of it, not even its state.
			return fmt.Errorf("approvals: review %s: %w", requestID, ErrNotFound)
		}
		if in.Evidence != nil && !in.Evidence.matches(cur.Request, by.UserID) {
			return fmt.Errorf("approvals: review %s: %w: the evidence is for another request, user or details", requestID, ErrStepUpRequired)
		}
		res, err := ApplyReview(cur.Request, reviews, rev, cur.Now)
		if errors.Is(err, ErrNotEligible) {
			return fmt.Errorf("approvals: review %s: %w", requestID, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("approvals: review %s: %w", requestID, err)
		}

		var evidenceID *int64
		if e := in.Evidence; e != nil && rev.Verdict == VerdictApprove {
			var id int64
			if err := t.GetContext(ctx, &id, insertEvidenceSQL, e.RequestID, e.UserID, e.DetailsHash, e.CredentialID,
				e.AuthenticatorData, e.ClientDataJSON, e.Signature, e.Nonce); err != nil {
				return fmt.Errorf("approvals: review %s: evidence: %w", requestID, translate(err))
			}
			evidenceID = &id
		}
		if _, err := st.insertReviewStmt.execTx(ctx, t, requestID, rev.Reviewer, rev.Verdict, rev.Reason, rev.AMR,
			evidenceID, rev.Groups); err != nil {
			if errors.Is(translate(err), ErrConflict) {
				// The same reviewer's other review won the race.
				return fmt.Errorf("approvals: review %s: %w", requestID, ErrAlreadyReviewed)
			}
			return fmt.Errorf("approvals: review %s: %w", requestID, translate(err))
		}
		var row struct {
			BeforeToken *string `db:"before_token"`
			Request
		}
		err = st.resolveStmt.getTx(ctx, t, &row, requestID, cur.Version, res.State, res.By, res.Reason,
			res.ACR, pq.StringArray(nonNil(res.AMR)))
		if errors.Is(err, sql.ErrNoRows) {
			return errVersionChanged
		}
		if err != nil {
			return fmt.Errorf("approvals: review %s: %w", requestID, translate(err))
		}
		out = row.Request
		actor := ActorUser(by.UserID)
		body := map[string]any{"verdict": rev.Verdict, "reason": rev.Reason, "amr": rev.AMR, "groups": rev.Groups}
		if evidenceID != nil {
			body["evidence_id"] = *evidenceID
		}
		t.record(newEvent(KindReviewRecorded, actor, out, body))
		if evidenceID != nil {
			t.record(newEvent(KindEvidenceRecorded, actor, out, evidenceBody(*evidenceID, in.Evidence)))
		}
		switch res.State {
		case StateApproved:
			t.record(newEvent(KindRequestApproved, actor, out, map[string]any{"acr": res.ACR, "amr": res.AMR}))
		case StateDenied:
			t.record(newEvent(KindRequestDenied, actor, out, map[string]any{"reason": res.Reason}))
			if suspended, err = s.suspendIfDenied(ctx, t, out.AgentID); err != nil {
				return err
			}
		}
		if res.State != StatePending {
			// CIBA §10.2: the client is pinged after a successful or failed
			// end-user authentication.
			t.ping(out, row.BeforeToken)
			t.pushDecided(out.ID)
		}
		recorded = t.events
		return nil
	})
	if err == nil {
		s.announced(recorded...)
	}
	if err == nil && suspended {
		s.logger.WarnContext(ctx, "agent suspended: its requests were denied too often", "agent", out.AgentID,
			"denials", s.fatigue.SuspendAfterDenials, "window", s.fatigue.SuspendWindow.String())
	}
	return out, err
}

// evidenceBody is what evidence.recorded says of stored step-up evidence e
// (row id): whose passkey signed which details hash, what its authenticator
// data proves, and the SHA-256 of the assertion as stored (authenticator
// data, client data JSON and signature, each length-prefixed), so that the
// sealed trail also seals the evidence that a later re-verification reads.
func evidenceBody(id int64, e *StepUpEvidence) map[string]any {
	h := sha256.New()
	for _, part := range [][]byte{e.AuthenticatorData, e.ClientDataJSON, e.Signature} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(part)))
		h.Write(n[:])
		h.Write(part)
	}
	return map[string]any{"evidence_id": id, "credential_id": base64.RawURLEncoding.EncodeToString(e.CredentialID),
		"details_hash": e.DetailsHash, "amr": nonNil(EvidenceAMR(e.AuthenticatorData, false)),
		"assertion_sha256": base64.RawURLEncoding.EncodeToString(h.Sum(nil))}
}
