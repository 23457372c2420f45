package approvals

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/jmoiron/sqlx"

	"github.com/countersign/countersign/approvals/audit"
	"github.com/countersign/countersign/internal/pgtest"
)

// sealFixture is a race fixture with a sealer leading on a connection of
// its own.
type sealFixture struct {
	raceFixture
	sealer *Sealer
	conn   *sqlx.Conn
}

func newSealFixture(t *testing.T) sealFixture {
	t.Helper()
	f := sealFixture{raceFixture: newRaceFixture(t)}
	f.sealer = f.svc.NewSealer("test", nil)
	f.conn = f.sealer.lead(context.Background())
	if f.conn == nil {
		t.Fatal("the sealer did not get the lead on a fresh database")
	}
	t.Cleanup(func() { f.sealer.resign(f.conn) })
	return f
}

// events makes n audit events: each request writes its request.created.
func (f sealFixture) events(t *testing.T, n int) {
	t.Helper()
	for range n {
		f.pending(t)
	}
}

// sealAll seals until nothing is left and returns how many it sealed.
func (f sealFixture) sealAll(t *testing.T) int {
	t.Helper()
	total := 0
	for {
		n, err := f.sealer.SealOnce(context.Background(), f.conn)
		if err != nil {
			t.Fatalf("SealOnce: %v", err)
		}
		total += n
		if n == 0 {
			return total
		}
	}
}

func (f sealFixture) keySet(t *testing.T) *jose.JSONWebKeySet {
	t.Helper()
	set, err := f.svc.Keys().AuditKeySet(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func (f sealFixture) keyRow(t *testing.T, kid string) auditKeyRow {
	t.Helper()
	var r auditKeyRow
	if err := f.db.Get(&r, `SELECT kid, public_jwk, private_sealed, created_at, retired_at FROM audit_keys WHERE kid = $1`, kid); err != nil {
		t.Fatal(err)
	}
	return r
}

func (f sealFixture) keySetIgnoringForged(t *testing.T) *jose.JSONWebKeySet {
	t.Helper()
	set, err := f.svc.Keys().AuditKeySet(context.Background())
	var fe *ForgedKeysError
	if err != nil && !errors.As(err, &fe) {
		t.Fatal(err)
	}
	return set
}

func (f sealFixture) verify(t *testing.T) (audit.Report, error) {
	t.Helper()
	return f.store.VerifyAudit(context.Background(), f.keySet(t), nil)
}

func (f sealFixture) count(t *testing.T, query string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := f.db.Get(&n, query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// eventAt is the id of the event sealed at position p.
func (f sealFixture) eventAt(t *testing.T, p int64) int64 {
	t.Helper()
	return f.count(t, `SELECT event_id FROM audit_chain WHERE position = $1`, p)
}

// tamper runs statements as someone with full database access: with the
// append-only triggers off.
func (f sealFixture) tamper(t *testing.T, stmts ...string) {
	t.Helper()
	tx := f.db.MustBegin()
	defer tx.Rollback()
	const tables = "audit_events audit_chain audit_checkpoints"
	for _, table := range strings.Fields(tables) {
		tx.MustExec(`ALTER TABLE ` + table + ` DISABLE TRIGGER USER`)
	}
	for _, s := range stmts {
		if _, err := tx.Exec(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	for _, table := range strings.Fields(tables) {
		tx.MustExec(`ALTER TABLE ` + table + ` ENABLE TRIGGER USER`)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

func (f sealFixture) export(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := f.store.ExportAudit(context.Background(), &buf, time.Time{}, time.Time{}, nil); err != nil {
		t.Fatalf("ExportAudit: %v", err)
	}
	return buf.Bytes()
}

func TestSealerSealsEveryEventOnceAndVerifies(t *testing.T) {
	f := newSealFixture(t)
	f.events(t, 7)
	events := f.count(t, `SELECT count(*) FROM audit_events`)
	if n := f.sealAll(t); int64(n) != events {
		t.Fatalf("sealed %d events, the trail holds %d", n, events)
	}
	f.events(t, 3)
	if n := f.sealAll(t); n != 3 {
		t.Fatalf("second batch sealed %d events, want the 3 new ones", n)
	}
	rep, err := f.verify(t)
	if err != nil {
		t.Fatalf("VerifyAudit of an untouched trail: %v", err)
	}
	if rep.Events != events+3 || rep.Last != events+3 || rep.Checkpoints != 2 || rep.Unsigned != 0 || rep.Unsealed != 0 {
		t.Fatalf("report %+v, want %d events in 2 checkpoints, none unsigned or unsealed", rep, events+3)
	}
	if n := f.count(t, `SELECT count(DISTINCT event_id) FROM audit_chain`); n != events+3 {
		t.Fatalf("%d distinct events in the chain, want %d", n, events+3)
	}
	// The chain and checkpoints are append-only like the events.
	for _, stmt := range []string{`UPDATE audit_chain SET hash = hash WHERE position = 1`, `DELETE FROM audit_checkpoints`,
		`TRUNCATE audit_chain`} {
		if _, err := f.db.Exec(stmt); err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: %v, want it refused as append-only", stmt, err)
		}
	}
	// An export verifies offline with the published key.
	rep, err = audit.VerifyExport(bytes.NewReader(f.export(t)), f.keySet(t), nil)
	if err != nil || rep.Events != events+3 || rep.Checkpoints != 2 {
		t.Fatalf("VerifyExport: %+v %v", rep, err)
	}
	// A key that did not sign it does not verify it.
	other := newSealFixture(t)
	other.events(t, 1)
	other.sealAll(t)
	if _, err := audit.VerifyExport(bytes.NewReader(f.export(t)), other.keySet(t), nil); err == nil {
		t.Fatal("an export verified against another server's checkpoint key")
	}
}

// A row committed after a row with a higher id is sealed when it commits,
// after the other, once.
func TestSealerSealsOutOfOrderCommits(t *testing.T) {
	f := newSealFixture(t)
	f.sealAll(t)
	ctx := context.Background()
	slow, err := f.db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Rollback()
	var slowID int64
	if err := slow.Get(&slowID, `INSERT INTO audit_events (kind, actor) VALUES ('test.slow', 'system:test') RETURNING id`); err != nil {
		t.Fatal(err)
	}
	var fastID int64
	if err := f.db.Get(&fastID, `INSERT INTO audit_events (kind, actor) VALUES ('test.fast', 'system:test') RETURNING id`); err != nil {
		t.Fatal(err)
	}
	if fastID <= slowID {
		t.Fatalf("ids %d then %d: the test needs the later commit to have the lower id", slowID, fastID)
	}
	if n := f.sealAll(t); n != 1 {
		t.Fatalf("sealed %d events while the slow one is uncommitted, want the fast one", n)
	}
	if err := slow.Commit(); err != nil {
		t.Fatal(err)
	}
	if n := f.sealAll(t); n != 1 {
		t.Fatalf("sealed %d events after the slow one committed, want it", n)
	}
	var fastPos, slowPos int64
	fastPos = f.count(t, `SELECT position FROM audit_chain WHERE event_id = $1`, fastID)
	slowPos = f.count(t, `SELECT position FROM audit_chain WHERE event_id = $1`, slowID)
	if slowPos != fastPos+1 {
		t.Fatalf("positions fast %d, slow %d: want commit order", fastPos, slowPos)
	}
	if _, err := f.verify(t); err != nil {
		t.Fatal(err)
	}
	// An aborted transaction's event never appears, and leaves no gap.
	tx := f.db.MustBegin()
	tx.MustExec(`INSERT INTO audit_events (kind, actor) VALUES ('test.aborted', 'system:test')`)
	_ = tx.Rollback()
	f.events(t, 1)
	f.sealAll(t)
	if rep, err := f.verify(t); err != nil || rep.Unsealed != 0 {
		t.Fatalf("after an aborted event: %+v %v", rep, err)
	}
	if n := f.count(t, `SELECT count(*) FROM audit_events e WHERE NOT EXISTS (SELECT 1 FROM audit_chain c WHERE c.event_id = e.id)`); n != 0 {
		t.Fatalf("%d events left unsealed", n)
	}
}

// Each tampering with the database is found, at its place, by VerifyAudit
// and by VerifyExport of an export made afterwards.
func TestAuditVerifyFindsTampering(t *testing.T) {
	cases := []struct {
		name   string
		tamper func(t *testing.T, f sealFixture) []string
		kind   string
		at     int64 // the position named (0: an event not in the chain)
		noFile bool  // the tampering leaves the exported part as it was
	}{
		{name: "one byte of a row changed", kind: audit.BreakChanged, at: 5, tamper: func(t *testing.T, f sealFixture) []string {
			return []string{fmt.Sprintf(`UPDATE audit_events SET actor = actor || 'x' WHERE id = %d`, f.eventAt(t, 5))}
		}},
		{name: "a middle row deleted", kind: audit.BreakMissing, at: 5, tamper: func(t *testing.T, f sealFixture) []string {
			return []string{fmt.Sprintf(`DELETE FROM audit_events WHERE id = %d`, f.eventAt(t, 5)), `DELETE FROM audit_chain WHERE position = 5`}
		}},
		{name: "a sealed event deleted", kind: audit.BreakMissing, at: 5, tamper: func(t *testing.T, f sealFixture) []string {
			return []string{fmt.Sprintf(`DELETE FROM audit_events WHERE id = %d`, f.eventAt(t, 5))}
		}},
		{name: "a row inserted", kind: audit.BreakInserted, at: 5, tamper: func(t *testing.T, f sealFixture) []string {
			return []string{
				`UPDATE audit_chain SET position = position + 1000000 WHERE position >= 5`,
				`UPDATE audit_chain SET position = position - 999999 WHERE position >= 1000000`,
				`INSERT INTO audit_events (id, kind, actor, xid) OVERRIDING SYSTEM VALUE VALUES (1000000, 'request.approved', 'user:mallory', '1')`,
				`INSERT INTO audit_chain (position, event_id, hash) VALUES (5, 1000000, sha256('forged'))`,
			}
		}},
		{name: "an event written after sealing", kind: audit.BreakInserted, noFile: true, tamper: func(t *testing.T, f sealFixture) []string {
			return []string{`INSERT INTO audit_events (kind, actor, xid) VALUES ('request.approved', 'user:mallory', '1')`}
		}},
		{name: "two rows swapped", kind: audit.BreakReordered, at: 5, tamper: func(t *testing.T, f sealFixture) []string {
			a, b := f.eventAt(t, 5), f.eventAt(t, 6)
			return []string{
				`UPDATE audit_chain SET event_id = -1 WHERE position = 5`,
				fmt.Sprintf(`UPDATE audit_chain SET event_id = %d WHERE position = 6`, a),
				fmt.Sprintf(`UPDATE audit_chain SET event_id = %d WHERE position = 5`, b),
			}
		}},
		{name: "the tail truncated", kind: audit.BreakTruncated, at: 9, tamper: func(t *testing.T, f sealFixture) []string {
			return []string{`DELETE FROM audit_events WHERE id IN (SELECT event_id FROM audit_chain WHERE position >= 9)`,
				`DELETE FROM audit_chain WHERE position >= 9`}
		}},
		{name: "a checkpoint altered", kind: audit.BreakCheckpoint, tamper: func(t *testing.T, f sealFixture) []string {
			return []string{`UPDATE audit_checkpoints SET sealed_at = sealed_at + interval '1 second' WHERE position = (SELECT min(position) FROM audit_checkpoints)`}
		}},
		{name: "rows and hashes rewritten", kind: audit.BreakCheckpoint, tamper: func(t *testing.T, f sealFixture) []string {
			// Someone who can write the database but holds no audit key
			// changes an event and recomputes every hash after it.
			id := f.eventAt(t, 5)
			var rows []chainRow
			if err := f.db.Select(&rows, chainRangeSQL, 1, 1<<40); err != nil {
				t.Fatal(err)
			}
			prev := audit.Hash{}
			var stmts []string
			for _, r := range rows {
				if r.ID.Int64 == id {
					r.Actor.String = "user:mallory"
				}
				h, err := audit.Next(prev, r.record())
				if err != nil {
					t.Fatal(err)
				}
				prev = h
				stmts = append(stmts, fmt.Sprintf(`UPDATE audit_chain SET hash = '\x%s' WHERE position = %d`, h, r.Position))
			}
			return append([]string{fmt.Sprintf(`UPDATE audit_events SET actor = 'user:mallory' WHERE id = %d`, id)}, stmts...)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newSealFixture(t)
			// Two batches, so that the chain has a checkpoint in the
			// middle and one at the end.
			f.events(t, 3)
			f.sealAll(t)
			f.events(t, 6)
			f.sealAll(t)
			if _, err := f.verify(t); err != nil {
				t.Fatalf("before tampering: %v", err)
			}
			f.tamper(t, c.tamper(t, f)...)
			check := func(what string, err error) {
				t.Helper()
				b, ok := audit.IsBreak(err)
				if !ok {
					t.Fatalf("%s: %v, want a break", what, err)
				}
				if b.Kind != c.kind || (c.at != 0 && b.Position != c.at) {
					t.Fatalf("%s: %v, want %s at position %d", what, b, c.kind, c.at)
				}
				if c.kind == audit.BreakCheckpoint && b.Position == 0 {
					t.Fatalf("%s: %v names no checkpoint", what, b)
				}
			}
			_, err := f.verify(t)
			check("VerifyAudit", err)
			if c.noFile {
				return
			}
			_, err = audit.VerifyExport(bytes.NewReader(f.export(t)), f.keySet(t), nil)
			check("VerifyExport", err)
		})
	}
}

// Each tampering with an exported file is found at its place offline.
func TestVerifyExportFindsTampering(t *testing.T) {
	f := newSealFixture(t)
	f.events(t, 3)
	f.sealAll(t)
	f.events(t, 6)
	f.sealAll(t)
	good := f.export(t)
	keys := f.keySet(t)
	lines := func() []audit.Line {
		var out []audit.Line
		sc := bufio.NewScanner(bytes.NewReader(good))
		for sc.Scan() {
			var l audit.Line
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Fatal(err)
			}
			out = append(out, l)
		}
		return out
	}
	write := func(ls []audit.Line) []byte {
		var buf bytes.Buffer
		for _, l := range ls {
			b, err := json.Marshal(l)
			if err != nil {
				t.Fatal(err)
			}
			buf.Write(append(b, '\n'))
		}
		return buf.Bytes()
	}
	// index is the line of the event at position p.
	index := func(ls []audit.Line, p int64) int {
		for i, l := range ls {
			if l.Type == audit.LineEvent && l.Position == p {
				return i
			}
		}
		t.Fatalf("no event line at position %d", p)
		return -1
	}
	if _, err := audit.VerifyExport(bytes.NewReader(write(lines())), keys, nil); err != nil {
		t.Fatalf("re-encoded export: %v", err)
	}
	cases := []struct {
		name string
		kind string
		at   int64
		edit func() []byte
	}{
		{"one byte changed", audit.BreakChanged, 5, func() []byte {
			ls := lines()
			i := index(ls, 5)
			line, _ := json.Marshal(ls[i])
			changed := bytes.Replace(line, []byte(`"actor":"`), []byte(`"actor":"X`), 1)
			var out [][]byte
			for j, l := range ls {
				b, _ := json.Marshal(l)
				if j == i {
					b = changed
				}
				out = append(out, b)
			}
			return append(bytes.Join(out, []byte("\n")), '\n')
		}},
		{"a middle line deleted", audit.BreakMissing, 5, func() []byte {
			ls := lines()
			i := index(ls, 5)
			return write(append(ls[:i:i], ls[i+1:]...))
		}},
		{"a line inserted", audit.BreakInserted, 5, func() []byte {
			ls := lines()
			i := index(ls, 5)
			forged := ls[i]
			forged.Event = &audit.Record{ID: 999999, At: forged.Event.At, Kind: "request.approved", Actor: "user:mallory", Body: json.RawMessage(`{}`)}
			out := append([]audit.Line{}, ls[:i]...)
			out = append(out, forged)
			for _, l := range ls[i:] {
				if l.Type != audit.LineStart {
					l.Position++
				}
				if l.Type == audit.LineEnd {
					n := *l.Events + 1
					l.Events = &n
				}
				out = append(out, l)
			}
			return write(out)
		}},
		{"two events swapped", audit.BreakReordered, 5, func() []byte {
			ls := lines()
			i, j := index(ls, 5), index(ls, 6)
			ls[i].Event, ls[j].Event = ls[j].Event, ls[i].Event
			return write(ls)
		}},
		{"the tail cut off", audit.BreakTruncated, 0, func() []byte {
			ls := lines()
			return write(ls[:len(ls)-3])
		}},
		{"a checkpoint signature altered", audit.BreakCheckpoint, 0, func() []byte {
			ls := lines()
			for i := range ls {
				if ls[i].Type == audit.LineCheckpoint {
					sig := []byte(ls[i].JWS)
					k := len(sig) - 5
					sig[k] = map[bool]byte{true: 'B', false: 'A'}[sig[k] == 'A']
					ls[i].JWS = string(sig)
					break
				}
			}
			return write(ls)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := audit.VerifyExport(bytes.NewReader(c.edit()), keys, nil)
			b, ok := audit.IsBreak(err)
			if !ok || b.Kind != c.kind || (c.at != 0 && b.Position != c.at) {
				t.Fatalf("VerifyExport: %v, want %s at %d", err, c.kind, c.at)
			}
		})
	}
}

// Two sealers on one database under concurrent writes: one leads, every
// event is sealed exactly once, the chain verifies.
func TestSealersOneLeader(t *testing.T) {
	f := newRaceFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	a, b := f.svc.NewSealer("a", nil), f.svc.NewSealer("b", nil)
	var wg sync.WaitGroup
	for _, z := range []*Sealer{a, b} {
		wg.Add(1)
		go func() { defer wg.Done(); z.Run(ctx, 20*time.Millisecond) }()
	}
	var writers sync.WaitGroup
	for range 4 {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for range 25 {
				if _, err := f.svc.Authorize(context.Background(), f.agent, AuthRequest{Scope: "openid", LoginHint: "alice@example.com",
					AuthorizationDetails: []byte(raceDetails)}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	writers.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var unsealed int
		if err := f.db.Get(&unsealed, `SELECT count(*) FROM audit_events e WHERE NOT EXISTS (SELECT 1 FROM audit_chain c WHERE c.event_id = e.id)`); err != nil {
			t.Fatal(err)
		}
		if unsealed == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events still unsealed after 10 s", unsealed)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	var sealers []string
	if err := f.db.Select(&sealers, `SELECT DISTINCT sealer FROM audit_checkpoints`); err != nil {
		t.Fatal(err)
	}
	if len(sealers) != 1 {
		t.Fatalf("checkpoints by %v: want one sealer leading", sealers)
	}
	set, err := f.svc.Keys().AuditKeySet(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	rep, err := f.store.VerifyAudit(context.Background(), set, nil)
	if err != nil || rep.Unsealed != 0 {
		t.Fatalf("VerifyAudit: %+v %v", rep, err)
	}
	var events int64
	if err := f.db.Get(&events, `SELECT count(*) FROM audit_events`); err != nil {
		t.Fatal(err)
	}
	if rep.Events != events {
		t.Fatalf("chain of %d events, the trail holds %d", rep.Events, events)
	}
}

// A rotated checkpoint key stays published, so the checkpoints it signed
// keep verifying; a key row written without the KEK is refused.
func TestAuditKeyRotation(t *testing.T) {
	f := newSealFixture(t)
	ctx := context.Background()
	f.events(t, 2)
	f.sealAll(t)
	before := f.keySet(t)
	info, err := f.svc.Keys().RotateAuditKey(ctx, ActorCLI)
	if err != nil {
		t.Fatal(err)
	}
	f.events(t, 2)
	f.sealAll(t)
	after := f.keySet(t)
	if len(before.Keys) != 1 || len(after.Keys) != 2 || len(after.Key(info.KID)) != 1 || len(after.Key(before.Keys[0].KeyID)) != 1 {
		t.Fatalf("keys before %d, after %d: want the old one kept beside the new %s", len(before.Keys), len(after.Keys), info.KID)
	}
	var kids []string
	if err := f.db.Select(&kids, `SELECT DISTINCT kid FROM audit_checkpoints`); err != nil {
		t.Fatal(err)
	}
	if len(kids) != 2 {
		t.Fatalf("checkpoints signed by %v, want both keys", kids)
	}
	if _, err := f.verify(t); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
	if _, err := f.store.VerifyAudit(ctx, before, nil); err == nil {
		t.Fatal("checkpoints of the new key verified with the old key set alone")
	}
	if n := f.count(t, `SELECT count(*) FROM audit_events WHERE kind = 'audit_key.rotated' AND subject = $1`, "audit_key:"+info.KID); n != 1 {
		t.Fatalf("%d audit_key.rotated events", n)
	}
	// Someone with database access only adds a key of their own.
	other, err := NewKeyStore(f.db, testKEK(9), nil)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := other.newAuditKey()
	if err != nil {
		t.Fatal(err)
	}
	f.db.MustExec(`INSERT INTO audit_keys (kid, public_jwk, private_sealed, retired_at) VALUES ($1, $2, $3, now())`, forged.KID, string(forged.Public), forged.Sealed)
	set, err := f.svc.Keys().AuditKeySet(ctx)
	var fe *ForgedKeysError
	if !errors.As(err, &fe) || len(fe.KIDs) != 1 || fe.KIDs[0] != forged.KID || len(set.Keys) != 2 || len(set.Key(forged.KID)) != 0 {
		t.Fatalf("AuditKeySet with a forged key row: %v (%d keys)", err, len(set.Keys))
	}
	// A retired key cannot sign after its successor: a checkpoint signed
	// with the first key after ones signed with the second is refused.
	if _, err := f.store.VerifyAudit(ctx, set, nil); err != nil {
		t.Fatal(err)
	}
	oldKey, _, err := f.svc.Keys().openAuditKey(f.keyRow(t, before.Keys[0].KeyID))
	if err != nil {
		t.Fatal(err)
	}
	f.events(t, 1)
	f.sealAll(t)
	var last int64
	var head []byte
	var sealedAt time.Time
	if err := f.db.QueryRow(`SELECT position, head, sealed_at FROM audit_checkpoints ORDER BY position DESC LIMIT 1`).Scan(&last, &head, &sealedAt); err != nil {
		t.Fatal(err)
	}
	h, _ := audit.HashFrom(head)
	cp, err := audit.Sign(audit.Claims{Position: last, Head: h, SealedAt: audit.FormatTime(sealedAt)}, oldKey, before.Keys[0].KeyID)
	if err != nil {
		t.Fatal(err)
	}
	f.tamper(t, fmt.Sprintf(`UPDATE audit_checkpoints SET kid = '%s', jws = '%s' WHERE position = %d`, cp.KID, cp.JWS, last))
	_, err = f.store.VerifyAudit(ctx, f.keySetIgnoringForged(t), nil)
	if b, ok := audit.IsBreak(err); !ok || b.Kind != audit.BreakCheckpoint || b.Position != last || !strings.Contains(b.Detail, "replaced") {
		t.Fatalf("a retired key's checkpoint after its successor's: %v", err)
	}
}

// BenchmarkSeal measures the sealer: each op seals one batch of 1,000
// new events (read them, canonical JSON and hashes, one chain insert, one
// signed checkpoint, commit), so ns/op is the wall time per 1,000 events
// and cpu-ms/1000-events the sealer process's own CPU for them.
func BenchmarkSeal(b *testing.B) {
	ctx := context.Background()
	db := pgtest.New(b)
	keys, err := NewKeyStore(db, raceKEK, nil)
	if err != nil {
		b.Fatal(err)
	}
	svc := NewService(NewStore(db), NewTypeStore(NewStore(db)), keys, Config{Issuer: "https://countersign.test", KEK: raceKEK})
	z := svc.NewSealer("bench", nil)
	z.batch = 1000
	conn := z.lead(ctx)
	if conn == nil {
		b.Fatal("no lead")
	}
	defer z.resign(conn)
	const insert = `INSERT INTO audit_events (kind, actor, request_id, agent_id, user_id, body)
		SELECT 'request.created', 'agent:bench', gen_random_uuid(), 'bench', 'alice',
			jsonb_build_object('outcome', 'allow', 'rule', 'small', 'policy_version', 1, 'details_hash', md5(g::text), 'types', jsonb_build_array('payment_initiation'))
		FROM generate_series(1, 1000) AS g`
	if _, err := z.SealOnce(ctx, conn); err != nil {
		b.Fatal(err)
	}
	var cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		db.MustExec(insert)
		before := processCPU()
		b.StartTimer()
		n, err := z.SealOnce(ctx, conn)
		b.StopTimer()
		cpu += processCPU() - before
		b.StartTimer()
		if err != nil || n != 1000 {
			b.Fatalf("sealed %d: %v", n, err)
		}
	}
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/1000-events")
}

// processCPU is this process's user and system time.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// No row stops the chain: an infinite time, a body nested past what JSON
// encoders take, a number RFC 8785 cannot write. Each is sealed, and the
// database and an export verify.
func TestSealerTakesAnyRow(t *testing.T) {
	f := newSealFixture(t)
	deep := strings.Repeat(`{"a":`, 10050) + `1` + strings.Repeat(`}`, 10050)
	f.db.MustExec(`INSERT INTO audit_events (kind, actor, at) VALUES ('test.forever', 'system:test', 'infinity')`)
	f.db.MustExec(`INSERT INTO audit_events (kind, actor, body) VALUES ('test.deep', 'system:test', $1::jsonb)`, deep)
	f.db.MustExec(`INSERT INTO audit_events (kind, actor, body) VALUES ('test.huge', 'system:test', '{"f": 1e400, "g": [1, 2]}')`)
	f.events(t, 1)
	f.sealAll(t)
	if n := f.count(t, `SELECT count(*) FROM audit_events e WHERE NOT EXISTS (SELECT 1 FROM audit_chain c WHERE c.event_id = e.id)`); n != 0 {
		t.Fatalf("%d events left unsealed", n)
	}
	if _, err := f.verify(t); err != nil {
		t.Fatalf("VerifyAudit: %v", err)
	}
	if _, err := audit.VerifyExport(bytes.NewReader(f.export(t)), f.keySet(t), nil); err != nil {
		t.Fatalf("VerifyExport: %v", err)
	}
}

// A backlog larger than a batch moves the horizon batch by batch, so no
// batch reads everything since the first; every event is sealed once.
func TestSealerBacklog(t *testing.T) {
	f := newSealFixture(t)
	f.sealAll(t)
	f.sealer.batch = 4
	for range 5 {
		f.db.MustExec(`INSERT INTO audit_events (kind, actor) SELECT 'test.bulk', 'system:test' FROM generate_series(1, 3)`)
	}
	f.sealAll(t)
	var horizons []string
	if err := f.db.Select(&horizons, `SELECT horizon::text FROM audit_checkpoints ORDER BY position`); err != nil {
		t.Fatal(err)
	}
	for i := 2; i < len(horizons); i++ {
		if !xidLess(horizons[i-1], horizons[i]) && horizons[i-1] != horizons[i] {
			t.Fatalf("horizons went back: %v", horizons)
		}
	}
	if len(horizons) < 5 || horizons[1] == horizons[len(horizons)-2] {
		t.Fatalf("horizons %v: want them to move while the backlog drains", horizons)
	}
	if rep, err := f.verify(t); err != nil || rep.Unsealed != 0 {
		t.Fatalf("VerifyAudit: %+v %v", rep, err)
	}
}

// After the database moves to a cluster whose transaction ids are lower
// than the last horizon (a dump restored elsewhere), new events are still
// sealed.
func TestSealerAfterRestore(t *testing.T) {
	f := newSealFixture(t)
	f.events(t, 2)
	f.sealAll(t)
	// The restored checkpoint's horizon is far above this cluster's ids.
	f.tamper(t, `UPDATE audit_checkpoints SET horizon = '900000000000' WHERE position = (SELECT max(position) FROM audit_checkpoints)`)
	f.events(t, 2)
	if n := f.sealAll(t); n != 2 {
		t.Fatalf("sealed %d events after the move, want the 2 new ones", n)
	}
	if n := f.count(t, `SELECT count(*) FROM audit_events e WHERE NOT EXISTS (SELECT 1 FROM audit_chain c WHERE c.event_id = e.id)`); n != 0 {
		t.Fatalf("%d events left unsealed", n)
	}
}
