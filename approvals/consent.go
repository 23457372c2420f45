package approvals

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/lib/pq"

	"github.com/countersign/countersign/rar"
)

// Consent is what the consent page shows one reviewer of one request.
type Consent struct {
	Request Request
	Agent   Agent
	// Summaries describe the elements under the type versions the request
	// was made with (nil when those cannot be read: the page then shows the
	// canonical JSON).
	Summaries []rar.Summary
	// Reviews are the reviews so far, oldest first, with who made them.
	Reviews []NamedReview
	// Quorum is the progress of each group the request needs approvals from.
	Quorum []QuorumProgress
	// Mine is the reviewer's own review, if they made one.
	Mine *Review
	// CanReview says whether the reviewer may still decide: the request is
	// pending and live, and they may review it and have not.
	CanReview bool
	// ApprovalCounts says whether the reviewer's approval would count
	// towards what the request needs (a deny always counts).
	ApprovalCounts bool
	// MayReport says whether the reviewer may report the request as not
	// theirs ("this wasn't me"): it is their own and still pending.
	MayReport bool
	// UserApproval says whether the request's own user must approve and
	// has not yet.
	UserApproval bool
	Now          time.Time
}

// NamedReview is a review with its reviewer's email and name.
type NamedReview struct {
	Review
	Email, Name string
}

// QuorumProgress is how far a request is with one group's approvals.
type QuorumProgress struct {
	Group    string
	N        int // approvals the group must give
	Approved int // approvals it has given that count
}

// consentRequestSQL reads request $1 only if user $2 (of groups $3) may see
// it: one that is not theirs reads as one that does not exist, in the same
// one indexed lookup, so that neither the answer nor its time tells them
// apart.
const consentRequestSQL = `SELECT now() AS now, ` + requestColumns + ` FROM requests
WHERE id = $1 AND (user_id = $2 OR EXISTS (SELECT 1 FROM jsonb_array_elements(quorum) q WHERE q->>'Group' = ANY($3::text[])))`

const namedReviewsSQL = `
SELECT v.request_id, v.reviewer, v.verdict, v.reason, v.amr, v.groups, v.created_at, u.email, u.name,
	v.evidence_id IS NOT NULL AS has_evidence
FROM reviews v JOIN users u ON u.id = v.reviewer
WHERE v.request_id = $1
ORDER BY v.created_at, v.reviewer`

// Consent returns request id as user may see it. A request that does not
// exist and one user may not see (not theirs, and of no quorum group of
// theirs) are the same ErrNotFound, so a consent URL tells nobody else
// anything.
func (s *Service) Consent(ctx context.Context, id string, user User) (Consent, error) {
	if _, ok := parseUUID(id); !ok || user.Status != "active" {
		return Consent{}, fmt.Errorf("approvals: consent %s: %w", id, ErrNotFound)
	}
	var cur struct {
		Now time.Time `db:"now"`
		Request
	}
	if err := s.store.db.GetContext(ctx, &cur, consentRequestSQL, id, user.ID, pq.StringArray(nonNil(user.Groups))); err != nil {
		return Consent{}, fmt.Errorf("approvals: consent %s: %w", id, translate(err))
	}
	r := cur.Request
	self := Review{Reviewer: user.ID, Groups: user.Groups}
	if !eligible(r, self) {
		return Consent{}, fmt.Errorf("approvals: consent %s: %w", id, ErrNotFound)
	}
	agent, err := s.store.Agent(ctx, r.AgentID)
	if err != nil {
		return Consent{}, err
	}
	var rows []struct {
		NamedReview
		HasEvidence bool `db:"has_evidence"`
	}
	if err := s.store.db.SelectContext(ctx, &rows, namedReviewsSQL, id); err != nil && !errors.Is(err, ErrNotFound) {
		return Consent{}, fmt.Errorf("approvals: consent %s: %w", id, err)
	}
	c := Consent{Request: r, Agent: agent, Summaries: s.summarize(ctx, r), Now: cur.Now}
	for _, row := range rows {
		c.Reviews = append(c.Reviews, row.NamedReview)
		if row.Reviewer == user.ID {
			mine := row.Review
			c.Mine = &mine
		}
	}
	for _, q := range r.Quorum {
		p := QuorumProgress{Group: q.Group, N: q.N}
		for _, x := range c.Reviews {
			if x.Verdict == VerdictApprove && inQuorum(r, q, x.Review) {
				p.Approved++
			}
		}
		c.Quorum = append(c.Quorum, p)
	}
	c.CanReview = r.State == StatePending && cur.Now.Before(r.ExpiresAt) && c.Mine == nil
	c.ApprovalCounts = c.CanReview && counts(r, self)
	c.MayReport = c.CanReview && r.UserID == user.ID
	c.UserApproval = needsUser(r) && !slices.ContainsFunc(c.Reviews, func(x NamedReview) bool {
		return x.Reviewer == r.UserID && x.Verdict == VerdictApprove
	})
	return c, nil
}

// Audience says who may see request id: its user, and the members of the
// groups its quorum asks (live updates tell only them that it changed).
func (s *Service) Audience(ctx context.Context, id string) (userID string, groups []string, err error) {
	var row struct {
		UserID string     `db:"user_id"`
		Quorum QuorumJSON `db:"quorum"`
	}
	if err := s.store.db.GetContext(ctx, &row, `SELECT user_id, quorum FROM requests WHERE id = $1`, id); err != nil {
		return "", nil, fmt.Errorf("approvals: audience of %s: %w", id, translate(err))
	}
	for _, q := range row.Quorum {
		groups = append(groups, q.Group)
	}
	return row.UserID, groups, nil
}

// viewedSQL records that user $2 was shown request $1's consent page in
// session $3 — once per session and request: a reload, the live page
// re-rendering it, or a second tab of the same session adds nothing (two
// loads at the very same instant may both write one). Its body says in
// which state the page showed the request.
const viewedSQL = `
INSERT INTO audit_events (kind, actor, request_id, agent_id, user_id, body)
SELECT '` + KindRequestViewed + `', 'user:' || $2::text, r.id, r.agent_id, r.user_id,
	jsonb_build_object('session', $3::text, 'state', r.state)
FROM requests r
WHERE r.id = $1 AND NOT EXISTS (
	SELECT 1 FROM audit_events e
	WHERE e.request_id = $1 AND e.kind = '` + KindRequestViewed + `' AND e.actor = 'user:' || $2::text
		AND e.body->>'session' = $3::text)`

// Viewed records that user, signed in with session sessionID (its public
// id), was shown the consent page of request id (request.viewed), unless
// that session was shown it before. Call it only once Consent has let user
// see the request.
func (s *Service) Viewed(ctx context.Context, id string, user User, sessionID string) error {
	if _, ok := parseUUID(id); !ok {
		return fmt.Errorf("approvals: viewed %s: %w", id, ErrNotFound)
	}
	if _, err := s.store.db.ExecContext(ctx, viewedSQL, id, user.ID, sessionID); err != nil {
		return fmt.Errorf("approvals: viewed %s: %w", id, translate(err))
	}
	return nil
}
