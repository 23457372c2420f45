package audit

import (
	"encoding/json"
	"testing"

	"github.com/gowebpki/jcs"
)

// The direct canonical form is jcs's, byte for byte, and the fallback
// takes what it does not.
func TestCanonicalIsJCS(t *testing.T) {
	s := func(v string) *string { return &v }
	for _, r := range []Record{
		{ID: 1, At: "2026-12-03T12:00:00.000000Z", Kind: "request.created", Actor: "agent:a<b>&", Body: json.RawMessage(`{"z":1,"a":[true,null,"é\u2028"],"m":{"b":"\"q\"","a":0.5}}`)},
		{ID: 9007199254740993, At: "x", Kind: "k", Actor: "a", RequestID: s("0b6f…"), AgentID: s(""), UserID: s("u\x01"), Subject: s("type:t"), Body: json.RawMessage(`{}`)},
		{ID: 3, At: "x", Kind: "k", Actor: "a", Body: json.RawMessage(`{"n":12345678901234567890,"f":0.1}`)},
		{ID: 4, At: "x", Kind: "k", Actor: "bad \xff utf-8", Body: nil},
	} {
		got, err := r.Canonical()
		if err != nil {
			t.Fatalf("Canonical(%d): %v", r.ID, err)
		}
		raw, _ := json.Marshal(r)
		want, err := jcs.Transform(raw)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("record %d:\n got %s\nwant %s", r.ID, got, want)
		}
	}
}

// A body without an RFC 8785 form is sealed as its text, never an error,
// and the sealed form round-trips through JSON (an export) unchanged.
func TestSealFormOfUnwritableBody(t *testing.T) {
	r := Record{ID: 5, At: "x", Kind: "k", Actor: "a", Body: json.RawMessage(`{"f": 1e400}`)}
	got := r.SealForm()
	if want := `{"actor":"a","agent_id":null,"at":"x","body":"{\"f\": 1e400}","id":5,"kind":"k","request_id":null,"subject":null,"user_id":null}`; string(got) != want {
		t.Fatalf("got %s\nwant %s", got, want)
	}
	b, err := json.Marshal(&r)
	if err != nil {
		t.Fatal(err)
	}
	var back Record
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if again := back.SealForm(); string(again) != string(got) {
		t.Fatalf("after a JSON round trip: %s", again)
	}
}
