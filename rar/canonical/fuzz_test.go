package canonical

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/gowebpki/jcs"
)

// FuzzTransform checks that Transform never panics, rejects only with a
// *FieldError whose element and rule read back from its description, and that what it accepts it
// writes as github.com/gowebpki/jcs does, as a fixed point.
func FuzzTransform(f *testing.F) {
	f.Add([]byte(`[{"type":"payment_initiation","instructedAmount":{"currency":"EUR","amount":"500.00"},"n":1.0e2}]`))
	f.Add([]byte(`[{"a":1,"a":2}]`))
	f.Add([]byte(`[{"\ud83d\ude02":"x","\ufb33":[true,null,-0]}]`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := Transform(raw)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %T is not a *FieldError: %v", err, err)
			}
			// A path holding ": " is where ParseDescription is documented to
			// cut.
			if back, ok := ParseDescription(fe.Description()); !strings.Contains(fe.Path, ": ") && (!ok || back.Index != fe.Index || back.Rule != fe.Rule) {
				t.Fatalf("description %q reads back as %+v, %v", fe.Description(), back, ok)
			}
			return
		}
		ref, err := jcs.Transform(raw)
		if err != nil || !bytes.Equal(ref, c) {
			t.Fatalf("canonical form differs from jcs:\nours %s\njcs  %s (%v)", c, ref, err)
		}
		again, err := Transform(c)
		if err != nil || !bytes.Equal(again, c) {
			t.Fatalf("canonical form is not a fixed point: %s, %v", again, err)
		}
	})
}
