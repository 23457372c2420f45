package approvals

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
)

func testKEK(b byte) []byte { return bytes.Repeat([]byte{b}, KEKSize) }

func TestSealOpen(t *testing.T) {
	kek := testKEK(1)
	plaintext := []byte(`{"kty":"EC","d":"secret"}`)
	sealed, err := seal(kek, plaintext, []byte("kid-1"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("secret")) {
		t.Fatalf("sealed bytes contain the plaintext: %q", sealed)
	}
	// 12-byte nonce + ciphertext + 16-byte tag.
	if want := 12 + len(plaintext) + 16; len(sealed) != want {
		t.Fatalf("sealed length = %d, want %d", len(sealed), want)
	}
	again, err := seal(kek, plaintext, []byte("kid-1"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(sealed[:12], again[:12]) {
		t.Fatal("two seals used the same nonce")
	}

	got, err := open(kek, sealed, []byte("kid-1"))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	if !bytes.Equal(got, plaintext) {
		t.Fatalf("open = %q, want %q", got, plaintext)
	}

	flip := func(i int) []byte {
		b := bytes.Clone(sealed)
		b[i] ^= 1
		return b
	}
	tests := []struct {
		name   string
		kek    []byte
		sealed []byte
		aad    string
	}{
		{"tampered nonce", kek, flip(0), "kid-1"},
		{"tampered ciphertext", kek, flip(12), "kid-1"},
		{"tampered tag", kek, flip(len(sealed) - 1), "kid-1"},
		{"truncated", kek, sealed[:len(sealed)-1], "kid-1"},
		{"shorter than a nonce", kek, sealed[:5], "kid-1"},
		{"empty", kek, nil, "kid-1"},
		{"other kid", kek, sealed, "kid-2"},
		{"no kid", kek, sealed, ""},
		{"other KEK", testKEK(2), sealed, "kid-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := open(tt.kek, tt.sealed, []byte(tt.aad))
			if !errors.Is(err, errSealed) {
				t.Fatalf("open = %q, %v; want errSealed", got, err)
			}
		})
	}
}

func TestSealKeySize(t *testing.T) {
	for _, n := range []int{0, 16, 24, 31, 33} {
		if _, err := seal(make([]byte, n), []byte("x"), nil); err == nil {
			t.Errorf("seal with a %d-byte key succeeded", n)
		}
		if _, err := open(make([]byte, n), make([]byte, 40), nil); err == nil {
			t.Errorf("open with a %d-byte key succeeded", n)
		}
	}
}

func TestDeriveKey(t *testing.T) {
	a := DeriveKey(testKEK(1), "countersign auth_req_id v1")
	if len(a) != 32 {
		t.Fatalf("len = %d, want 32", len(a))
	}
	tests := []struct {
		name    string
		kek     []byte
		purpose string
		same    bool
	}{
		{"same inputs", testKEK(1), "countersign auth_req_id v1", true},
		{"other purpose", testKEK(1), "countersign signing_keys v1", false},
		{"other KEK", testKEK(2), "countersign auth_req_id v1", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := DeriveKey(tt.kek, tt.purpose)
			if bytes.Equal(a, b) != tt.same {
				t.Fatalf("equal = %v, want %v", !tt.same, tt.same)
			}
		})
	}
	if bytes.Equal(a, testKEK(1)) {
		t.Fatal("derived key equals the KEK")
	}
}

// TestDeriveKeyVector pins the output to RFC 5869 HKDF-SHA256 with an empty
// salt, so other programs (and later versions) derive the same key.
func TestDeriveKeyVector(t *testing.T) {
	// RFC 5869 Appendix A.3: IKM = 22 × 0x0b, salt and info empty; OKM is
	// 42 bytes, of which DeriveKey returns the first 32.
	const want = "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
	got := DeriveKey(bytes.Repeat([]byte{0x0b}, 22), "")
	if h := hex.EncodeToString(got); h != want {
		t.Fatalf("DeriveKey = %s, want %s", h, want)
	}
}
