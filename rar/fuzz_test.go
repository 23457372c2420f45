package rar

import (
	"bytes"
	"errors"
	"testing"

	"github.com/gowebpki/jcs"
)

// FuzzParse checks that Parse never panics, never accepts input over the
// limits, and that what it accepts is canonical: Canonical re-parses to the
// same hash, agrees with github.com/gowebpki/jcs, and summarizes safely.
// Seeds are in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	r := testRegistry(f)
	f.Add([]byte(arr(payment, dbOp, merge, email)))
	f.Fuzz(func(t *testing.T, raw []byte) {
		d, err := r.Parse(raw)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %T is not a *FieldError: %v", err, err)
			}
			for _, c := range []byte(err.Error()) {
				if c < 0x20 || c > 0x7e {
					t.Fatalf("error line contains byte %#x: %q", c, err.Error())
				}
			}
			if len(raw) > MaxBytes && fe.Rule != "max_bytes" {
				t.Fatalf("%d bytes rejected with %q, want max_bytes", len(raw), fe.Rule)
			}
			return
		}
		if len(raw) > MaxBytes {
			t.Fatalf("accepted %d bytes", len(raw))
		}
		if n := len(d.Elements); n == 0 || n > MaxElements {
			t.Fatalf("accepted %d elements", n)
		}
		for _, e := range d.Elements {
			if depth := depthOf(e.Value) + 1; depth > MaxDepth {
				t.Fatalf("accepted depth %d", depth)
			}
		}
		if d.Hash != Hash(d.Canonical) {
			t.Fatal("Hash does not match Canonical")
		}
		again, err := r.Parse(d.Canonical)
		if err != nil {
			t.Fatalf("re-parsing Canonical %s: %v", d.Canonical, err)
		}
		if again.Hash != d.Hash || !bytes.Equal(again.Canonical, d.Canonical) {
			t.Fatalf("Canonical is not a fixed point:\n%s\n%s", d.Canonical, again.Canonical)
		}
		ref, err := jcs.Transform(raw)
		if err != nil {
			t.Fatalf("jcs.Transform rejects what Parse accepted: %v", err)
		}
		if !bytes.Equal(ref, d.Canonical) {
			t.Fatalf("canonical form differs from jcs:\nours %s\njcs  %s", d.Canonical, ref)
		}
		for _, s := range r.Summarize(d) {
			for _, text := range []string{s.Sentence} {
				for _, c := range text {
					if isInvisible(c) || c < 0x20 || (c >= 0x7f && c <= 0x9f) {
						t.Fatalf("sentence %q contains %U", text, c)
					}
				}
			}
			for _, row := range s.Rows {
				for _, c := range row.Label + row.Value {
					if isInvisible(c) || c < 0x20 || (c >= 0x7f && c <= 0x9f) {
						t.Fatalf("row %q contains %U", row, c)
					}
				}
			}
		}
	})
}

// depthOf counts nested containers in v, v itself included.
func depthOf(v any) int {
	deepest := 0
	switch v := v.(type) {
	case map[string]any:
		for _, e := range v {
			deepest = max(deepest, depthOf(e))
		}
	case []any:
		for _, e := range v {
			deepest = max(deepest, depthOf(e))
		}
	default:
		return 0
	}
	return deepest + 1
}
