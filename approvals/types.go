package approvals

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/countersign/countersign/rar"
)

// typeDefinition is how a rar.Type is kept in request_type_versions.definition.
type typeDefinition struct {
	Name        string             `json:"name"`
	Description string             `json:"description"`
	MaxLifetime string             `json:"max_lifetime"`
	Summary     string             `json:"summary"`
	Fields      []rar.DisplayField `json:"fields"`
	// Omitted when empty, so that a type without an amount keeps the
	// digest it had before types could declare one.
	Amount string          `json:"amount,omitempty"`
	Schema json.RawMessage `json:"schema"`
}

func definitionOf(t rar.Type) typeDefinition {
	return typeDefinition{Name: t.Name, Description: t.Description, MaxLifetime: t.MaxLifetime.String(),
		Summary: t.Summary, Fields: t.Fields, Amount: t.Amount, Schema: t.Schema}
}

func (d typeDefinition) rarType() (rar.Type, error) {
	life, err := time.ParseDuration(d.MaxLifetime)
	if err != nil {
		return rar.Type{}, fmt.Errorf("approvals: type %q: max_lifetime: %w", d.Name, err)
	}
	return rar.Type{Name: d.Name, Description: d.Description, MaxLifetime: life, Summary: d.Summary,
		Fields: d.Fields, Amount: d.Amount, Schema: d.Schema}, nil
}

// digest is SHA-256 over the definition's JSON with the schema compacted, so
// re-applying the same file (or its JSON twin) is recognised as no change.
func (d typeDefinition) digest() (string, []byte, error) {
	var schema any
	if err := json.Unmarshal(d.Schema, &schema); err != nil {
		return "", nil, fmt.Errorf("approvals: type %q: schema: %w", d.Name, err)
	}
	compact, err := json.Marshal(schema) // map keys sorted: a stable form
	if err != nil {
		return "", nil, err
	}
	d.Schema = compact
	b, err := json.Marshal(d)
	if err != nil {
		return "", nil, err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), b, nil
}

// TypeChange reports what applying one type did.
type TypeChange struct {
	Name    string `json:"name"`
	Version int    `json:"version"`
	Action  string `json:"action"` // created, updated or unchanged
}

// TypeStore keeps the registered request types and hands out the compiled
// registry of their current versions.
type TypeStore struct {
	store *Store

	mu       sync.Mutex
	key      string // fingerprint of the cached versions
	registry *rar.Registry
	versions TypeVersions
	// past are registries of earlier versions, by fingerprint: a version
	// never changes once applied, so they need no invalidation.
	past map[string]*rar.Registry
}

// pastRegistries bounds TypeStore.past.
const pastRegistries = 32

// NewTypeStore returns a TypeStore on s.
func NewTypeStore(s *Store) *TypeStore { return &TypeStore{store: s} }

const currentTypesSQL = `
SELECT v.name, v.version, v.definition, v.digest
FROM request_types t JOIN request_type_versions v ON v.name = t.name AND v.version = t.version
ORDER BY v.name`

type typeRow struct {
	Name       string `db:"name"`
	Version    int    `db:"version"`
	Definition []byte `db:"definition"`
	Digest     string `db:"digest"`
}

const insertTypeSQL = `
INSERT INTO request_types (name, version) VALUES ($1, 1)
ON CONFLICT (name) DO UPDATE SET version = request_types.version + 1, updated_at = now()
RETURNING version`

const insertTypeVersionSQL = `
INSERT INTO request_type_versions (name, version, definition, digest) VALUES ($1, $2, $3, $4)`

// Apply registers types: a type whose definition changed gets a new version,
// an identical one is left alone (Apply is idempotent). All types are checked
// (compiled together with the ones already registered) before anything is
// written, and they are written in one transaction: nothing is applied
// partially.
func (ts *TypeStore) Apply(ctx context.Context, types []rar.Type) ([]TypeChange, error) {
	tx, err := ts.store.db.BeginTxx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("approvals: apply types: %w", err)
	}
	defer tx.Rollback()
	// One applier at a time, so two concurrent applies cannot both see "changed".
	if _, err := tx.ExecContext(ctx, `LOCK TABLE request_types IN SHARE ROW EXCLUSIVE MODE`); err != nil {
		return nil, fmt.Errorf("approvals: apply types: %w", err)
	}
	var rows []typeRow
	if err := tx.SelectContext(ctx, &rows, currentTypesSQL); err != nil {
		return nil, fmt.Errorf("approvals: apply types: %w", err)
	}
	current := map[string]typeRow{}
	merged := map[string]rar.Type{}
	for _, r := range rows {
		current[r.Name] = r
		var d typeDefinition
		if err := json.Unmarshal(r.Definition, &d); err != nil {
			return nil, fmt.Errorf("approvals: stored type %q: %w", r.Name, err)
		}
		if merged[r.Name], err = d.rarType(); err != nil {
			return nil, err
		}
	}
	seen := map[string]bool{}
	for _, t := range types {
		if seen[t.Name] {
			return nil, fmt.Errorf("%w: type %q is given twice", ErrInvalidInput, t.Name)
		}
		seen[t.Name] = true
		merged[t.Name] = t
	}
	all := make([]rar.Type, 0, len(merged))
	for _, t := range merged {
		all = append(all, t)
	}
	if _, err := rar.Compile(all); err != nil {
		return nil, err
	}

	var changes []TypeChange
	var events []Event
	for _, t := range types {
		digest, def, err := definitionOf(t).digest()
		if err != nil {
			return nil, err
		}
		if cur, ok := current[t.Name]; ok && cur.Digest == digest {
			changes = append(changes, TypeChange{Name: t.Name, Version: cur.Version, Action: "unchanged"})
			continue
		}
		var version int
		if err := tx.GetContext(ctx, &version, insertTypeSQL, t.Name); err != nil {
			return nil, fmt.Errorf("approvals: apply type %q: %w", t.Name, translate(err))
		}
		if _, err := tx.ExecContext(ctx, insertTypeVersionSQL, t.Name, version, string(def), digest); err != nil {
			return nil, fmt.Errorf("approvals: apply type %q: %w", t.Name, translate(err))
		}
		action, kind := "updated", KindTypeUpdated
		var before any
		if cur, ok := current[t.Name]; ok {
			before = map[string]any{"version": cur.Version, "digest": cur.Digest}
		}
		if version == 1 {
			action, kind = "created", KindTypeCreated
		}
		changes = append(changes, TypeChange{Name: t.Name, Version: version, Action: action})
		events = append(events, Event{Kind: kind, Actor: ActorCLI, Subject: ptr("type:" + t.Name),
			Body: mustJSON(map[string]any{"before": before, "after": map[string]any{"version": version, "digest": digest}})})
	}
	if err := writeEvents(ctx, tx, events); err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("approvals: apply types: %w", err)
	}
	slices.SortFunc(changes, func(a, b TypeChange) int { return strings.Compare(a.Name, b.Name) })
	return changes, nil
}

const typeFingerprintSQL = `SELECT coalesce(string_agg(name || ':' || version, ',' ORDER BY name), '') FROM request_types`

// Registry returns the compiled registry of the current type versions and the
// versions themselves. It is compiled once per set of versions: a type applied
// on another replica is picked up on the next call.
func (ts *TypeStore) Registry(ctx context.Context) (*rar.Registry, TypeVersions, error) {
	var key string
	if err := ts.store.db.GetContext(ctx, &key, typeFingerprintSQL); err != nil {
		return nil, nil, fmt.Errorf("approvals: types: %w", err)
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.registry != nil && ts.key == key {
		return ts.registry, ts.versions, nil
	}
	var rows []typeRow
	if err := ts.store.db.SelectContext(ctx, &rows, currentTypesSQL); err != nil {
		return nil, nil, fmt.Errorf("approvals: types: %w", err)
	}
	reg, versions, err := compileTypes(rows)
	if err != nil {
		return nil, nil, err
	}
	ts.key, ts.registry, ts.versions = key, reg, versions
	return reg, versions, nil
}

const typeVersionsSQL = `
SELECT v.name, v.version, v.definition, v.digest
FROM request_type_versions v JOIN jsonb_each_text($1::jsonb) w ON w.key = v.name AND w.value::int = v.version
ORDER BY v.name`

// RegistryAt returns the compiled registry of exactly the type versions
// given: what a request was checked against when it was made, so that a
// person reviewing it later reads it as the agent wrote it, whatever types
// were applied since.
func (ts *TypeStore) RegistryAt(ctx context.Context, versions TypeVersions) (*rar.Registry, error) {
	if len(versions) == 0 {
		return nil, fmt.Errorf("approvals: types: %w", ErrNotFound)
	}
	key := versions.fingerprint()
	ts.mu.Lock()
	if ts.registry != nil && ts.versions.covers(versions) {
		reg := ts.registry
		ts.mu.Unlock()
		return reg, nil
	}
	reg, ok := ts.past[key]
	ts.mu.Unlock()
	if ok {
		return reg, nil
	}
	var rows []typeRow
	if err := ts.store.db.SelectContext(ctx, &rows, typeVersionsSQL, versions); err != nil {
		return nil, fmt.Errorf("approvals: types: %w", err)
	}
	if len(rows) != len(versions) {
		return nil, fmt.Errorf("approvals: types %s: %w", key, ErrNotFound)
	}
	reg, _, err := compileTypes(rows)
	if err != nil {
		return nil, err
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.past == nil || len(ts.past) >= pastRegistries {
		ts.past = map[string]*rar.Registry{}
	}
	ts.past[key] = reg
	return reg, nil
}

// compileTypes compiles stored type versions into a registry.
func compileTypes(rows []typeRow) (*rar.Registry, TypeVersions, error) {
	types := make([]rar.Type, 0, len(rows))
	versions := TypeVersions{}
	for _, r := range rows {
		var d typeDefinition
		if err := json.Unmarshal(r.Definition, &d); err != nil {
			return nil, nil, fmt.Errorf("approvals: stored type %q: %w", r.Name, err)
		}
		t, err := d.rarType()
		if err != nil {
			return nil, nil, err
		}
		types = append(types, t)
		versions[r.Name] = r.Version
	}
	reg, err := rar.Compile(types)
	if err != nil {
		return nil, nil, fmt.Errorf("approvals: stored types do not compile: %w", err)
	}
	return reg, versions, nil
}
