package canonical

import (
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/gowebpki/jcs"
)

// canonicalOf decodes any JSON value (not only authorization_details) and
// writes its canonical form, so the RFC 8785 vectors can be used directly.
func canonicalOf(tb testing.TB, in string) string {
	tb.Helper()
	d := decoder{data: []byte(in), str: in, elem: -1}
	d.skipSpace()
	v, err := d.value(1)
	if err != nil {
		tb.Fatalf("decode %q: %v", in, err)
	}
	d.skipSpace()
	if d.pos != len(d.data) {
		tb.Fatalf("decode %q: trailing data", in)
	}
	return string(appendCanonical(nil, v))
}

// TestCanonicalVectors runs the RFC 8785 test data (Appendix and the
// cyberphone/json-canonicalization files shipped in github.com/gowebpki/jcs
// testdata) through our canonicalizer and through jcs.Transform.
func TestCanonicalVectors(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"arrays", `[
  56,
  {
    "d": true,
    "10": null,
    "1": [ ]
  }
]`, `[56,{"1":[],"10":null,"d":true}]`},
		{"french", `{
  "peach": "This sorting order",
  "péché": "is wrong according to French",
  "pêche": "but canonicalization MUST",
  "sin":   "ignore locale"
}`, `{"peach":"This sorting order","péché":"is wrong according to French","pêche":"but canonicalization MUST","sin":"ignore locale"}`},
		{"structures", `{
  "1": {"f": {"f": "hi","F": 5} ,"\n": 56.0},
  "10": { },
  "": "empty",
  "a": { },
  "111": [ {"e": "yes","E": "no" } ],
  "A": { }
}`, `{"":"empty","1":{"\n":56,"f":{"F":5,"f":"hi"}},"10":{},"111":[{"E":"no","e":"yes"}],"A":{},"a":{}}`},
		{"unicode not normalized", `{
  "Unnormalized Unicode":"A\u030a"
}`, "{\"Unnormalized Unicode\":\"A\u030a\"}"},
		// RFC 8785 §3.2.2 example, except 333333333.33333329, which Parse
		// rejects (its canonical form 333333333.3333333 is another decimal);
		// see TestCanonicalRejectsInexactVector.
		{"values", `{
  "numbers": [333333333.3333333, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}`, `{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}`},
		// RFC 8785 §3.2.3 sorting example: UTF-16 code unit order puts
		// U+1F602 (a surrogate pair) before U+FB33.
		{"weird", `{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\u000a": "Newline",
  "1": "One",
  "\u0080": "Control\u007f",
  "\ud83d\ude02": "Smiley",
  "\u00f6": "Latin Small Letter O With Diaeresis",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "</script>": "Browser Challenge"
}`, "{\"\\n\":\"Newline\",\"\\r\":\"Carriage Return\",\"1\":\"One\",\"</script>\":\"Browser Challenge\",\"\u0080\":\"Control\u007f\",\"ö\":\"Latin Small Letter O With Diaeresis\",\"€\":\"Euro Sign\",\"😂\":\"Smiley\",\"\ufb33\":\"Hebrew Letter Dalet With Dagesh\"}"},
		{"literals", ` true `, `true`},
		{"string", `    "this is a test string 1235"`, `"this is a test string 1235"`},
		{"controls", `"\u0001\u0008\u0009\u000a\u000b\u000c\u000d\u001f\u0020"`, `"\u0001\b\t\n\u000b\f\r\u001f "`},
		{"supplementary after private use", `{"\ue000":1,"\ud800\udc00":2}`, "{\"\U00010000\":2,\"\ue000\":1}"},
		{"same high surrogate", `{"\ud83d\ude03":1,"\ud83d\ude02":2}`, `{"😂":2,"😃":1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := canonicalOf(t, tt.in); got != tt.want {
				t.Errorf("canonical = %s, want %s", got, tt.want)
			}
			ref, err := jcs.Transform([]byte(tt.in))
			if err != nil {
				t.Fatalf("jcs.Transform: %v", err)
			}
			if string(ref) != tt.want {
				t.Errorf("jcs.Transform = %s, want %s", ref, tt.want)
			}
		})
	}
}

// TestNumberVectors uses the RFC 8785 Appendix B table: each IEEE 754 value
// must serialize as given, and that spelling must be accepted as exact.
func TestNumberVectors(t *testing.T) {
	tests := []struct {
		bits uint64
		want string
	}{
		{0x0000000000000000, "0"},
		{0x8000000000000000, "0"},
		{0x0000000000000001, "5e-324"},
		{0x8000000000000001, "-5e-324"},
		{0x7fefffffffffffff, "1.7976931348623157e+308"},
		{0xffefffffffffffff, "-1.7976931348623157e+308"},
		{0x4340000000000000, "9007199254740992"},
		{0xc340000000000000, "-9007199254740992"},
		{0x4430000000000000, "295147905179352830000"},
		{0x44b52d02c7e14af5, "9.999999999999997e+22"},
		{0x44b52d02c7e14af6, "1e+23"},
		{0x44b52d02c7e14af7, "1.0000000000000001e+23"},
		{0x444b1ae4d6e2ef4e, "999999999999999700000"},
		{0x444b1ae4d6e2ef4f, "999999999999999900000"},
		{0x444b1ae4d6e2ef50, "1e+21"},
		{0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"},
		{0x3eb0c6f7a0b5ed8d, "0.000001"},
		{0x41b3de4355555553, "333333333.3333332"},
		{0x41b3de4355555554, "333333333.33333325"},
		{0x41b3de4355555555, "333333333.3333333"},
		{0x41b3de4355555556, "333333333.3333334"},
		{0x41b3de4355555557, "333333333.33333343"},
		{0xbecbf647612f3696, "-0.0000033333333333333333"},
		{0x43143ff3c1cb0959, "1424953923781206.2"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			f := math.Float64frombits(tt.bits)
			for _, lit := range []string{tt.want, strconv.FormatFloat(f, 'e', -1, 64), strconv.FormatFloat(f, 'f', -1, 64)} {
				got, ok := exactNumber(lit)
				if !ok || got != tt.want {
					t.Errorf("exactNumber(%s) = %q, %v; want %q, true", lit, got, ok, tt.want)
				}
			}
		})
	}
}

func TestExactNumber(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" when rejected
	}{
		{"1", "1"},
		{"1.0", "1"},
		{"1.000000000000000000000000000000", "1"},
		{"1e2", "100"},
		{"1E+2", "100"},
		{"100e-2", "1"},
		{"0.5", "0.5"},
		{"0.1", "0.1"},
		{"-0.0", "0"},
		{"0e99999999999999999999", "0"},
		{"12345678901234567890", ""},
		{"12345678901234567000", "12345678901234567000"},
		{"0.1000000000000000055511151231257827", ""},
		{"0.10000000000000001", ""},
		{"9007199254740993", ""},
		{"1e400", ""},
		{"-1e400", ""},
		{"1e-400", ""},
		{"4.9e-324", ""},
		{"123456789012345678e-2", ""},
		{"1234567890123456.7", ""},
		{"1234567890123456.8", "1234567890123456.8"}, // the double is ...456.75; .8 is its shortest spelling
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, ok := exactNumber(tt.in)
			if tt.want == "" {
				if ok {
					t.Errorf("exactNumber(%s) = %q, want rejection", tt.in, got)
				}
				return
			}
			if !ok || got != tt.want {
				t.Errorf("exactNumber(%s) = %q, %v; want %q", tt.in, got, ok, tt.want)
			}
		})
	}
}

func TestHash(t *testing.T) {
	// SHA-256("[]") from coreutils: 4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945.
	if got, want := Hash([]byte("[]")), "T1PNoYwrqgwDVLtfmj7L5e0Sq02OEbqHPC8RFhICuUU"; got != want {
		t.Errorf("Hash([]) = %s, want %s", got, want)
	}
}

// Object canonicalizes one object as jcs does, without the size limit of
// authorization_details, and refuses what Decode refuses.
func TestObject(t *testing.T) {
	big := `{"b":"` + strings.Repeat("x", MaxBytes) + `","a":1}`
	for _, in := range []string{
		`{"id":12,"at":"2026-12-03T12:00:00.000000Z","body":{"z":[1,"\u00e9",{"y":null}],"a":true},"kind":"request.created","k\u003c":"<&>"}`,
		`{ }`,
		big,
	} {
		got, err := Object([]byte(in))
		if err != nil {
			t.Fatalf("Object(%.60s…): %v", in, err)
		}
		want, err := jcs.Transform([]byte(in))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Fatalf("Object = %.200s\njcs    = %.200s", got, want)
		}
	}
	for _, in := range []string{`[{}]`, `{"a":1,"a":2}`, `{"a":12345678901234567890}`, `{"a":1} x`, `"s"`, ``} {
		if _, err := Object([]byte(in)); err == nil {
			t.Errorf("Object(%q) accepted", in)
		}
	}
}
