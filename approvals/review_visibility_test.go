package approvals

import (
	"context"
	"errors"
	"testing"
)

// TestReviewRefusalsHideTheRequest: a reviewer who may not see a request
// gets ErrNotFound whatever its state and whatever they send, exactly as
// for a request that does not exist; and step-up evidence made for another
// request or user is refused even on a request that needs no step-up.
func TestReviewRefusalsHideTheRequest(t *testing.T) {
	f := newRaceFixture(t)
	ctx := context.Background()
	stranger, err := f.store.CreateUser(ctx, NewUser{Email: "mallory@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	by := Reviewer{UserID: stranger.ID}
	decided := f.pending(t)
	if _, err := f.decide(ctx, decided.Request.ID, false); err != nil {
		t.Fatal(err)
	}
	pending := f.pending(t)
	for name, tc := range map[string]struct {
		id string
		in ReviewInput
	}{
		"unknown":               {"00000000-0000-4000-8000-000000000000", ReviewInput{Verdict: VerdictApprove}},
		"decided":               {decided.Request.ID, ReviewInput{Verdict: VerdictApprove}},
		"pending, bad verdict":  {pending.Request.ID, ReviewInput{Verdict: "maybe"}},
		"pending, long reason":  {pending.Request.ID, ReviewInput{Verdict: VerdictDeny, Reason: string(make([]byte, 600))}},
		"pending, plain review": {pending.Request.ID, ReviewInput{Verdict: VerdictDeny}},
	} {
		if _, err := f.svc.Review(ctx, tc.id, by, tc.in); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: %v, want ErrNotFound", name, err)
		}
	}

	other := f.pending(t)
	evidence := &StepUpEvidence{RequestID: other.Request.ID, UserID: f.user.ID, DetailsHash: other.Request.DetailsHash,
		CredentialID: []byte{1}, AuthenticatorData: []byte{1}, ClientDataJSON: []byte("{}"), Signature: []byte{1}, Nonce: []byte{1}}
	_, err = f.svc.Review(ctx, pending.Request.ID, Reviewer{UserID: f.user.ID}, ReviewInput{Verdict: VerdictApprove, Evidence: evidence})
	if !errors.Is(err, ErrStepUpRequired) {
		t.Fatalf("evidence for another request: %v, want ErrStepUpRequired", err)
	}
	r, err := f.store.Request(ctx, pending.Request.ID)
	if err != nil || r.State != StatePending {
		t.Fatalf("after refused evidence: %v %v", r.State, err)
	}
}

// TestTokenOfSuspendedPartyNotRedeemable: a token that escaped a
// suspension's revocation (collected while the suspension was committing)
// is refused by /redeem as revoked, and introspection calls it inactive.
func TestTokenOfSuspendedPartyNotRedeemable(t *testing.T) {
	f := newRaceFixture(t)
	ctx := context.Background()
	c := f.pending(t)
	if _, err := f.decide(ctx, c.Request.ID, true); err != nil {
		t.Fatal(err)
	}
	tok, err := f.svc.Token(ctx, f.agent, c.AuthReqID)
	if err != nil {
		t.Fatal(err)
	}
	// The suspension without its revocation: what the race leaves behind.
	if _, err := f.db.ExecContext(ctx, `UPDATE agents SET status = 'suspended' WHERE id = $1`, f.agent.ID); err != nil {
		t.Fatal(err)
	}
	var rs ResourceServer
	if err := f.db.GetContext(ctx, &rs, `SELECT `+resourceColumns+` FROM resource_servers LIMIT 1`); err != nil {
		t.Fatal(err)
	}
	red, err := f.svc.Redeem(ctx, rs, tok.AccessToken, []byte(raceDetails), "")
	if err != nil || red.Active || red.Reason != ReasonRevoked {
		t.Fatalf("redeem of a suspended agent's token: %+v %v", red, err)
	}
	if claims, err := f.svc.Introspect(ctx, rs, tok.AccessToken); err != nil || claims != nil {
		t.Fatalf("introspect of a suspended agent's token: %+v %v", claims, err)
	}
}
