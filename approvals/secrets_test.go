package approvals

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
)

// TestUserCodeHashCaps: the argon2id parameters come from the stored string,
// so a hash written by anyone but HashUserCode could make one check cost any
// memory or time (or panic the hash); parameters beyond what HashUserCode
// writes are refused without hashing.
func TestUserCodeHashCaps(t *testing.T) {
	b64 := base64.RawStdEncoding.EncodeToString
	salt, key := b64(make([]byte, 16)), b64(make([]byte, 32))
	hash := func(params, salt, key string) string {
		return fmt.Sprintf("$argon2id$v=19$%s$%s$%s", params, salt, key)
	}
	for _, tc := range []struct {
		name, encoded string
	}{
		{"memory above 64 MiB", hash("m=65537,t=3,p=2", salt, key)},
		{"memory 4 GiB", hash("m=4194304,t=3,p=2", salt, key)},
		{"memory below 8 KiB per lane", hash("m=8,t=3,p=2", salt, key)},
		{"four passes", hash("m=65536,t=4,p=2", salt, key)},
		{"a million passes", hash("m=65536,t=1000000,p=2", salt, key)},
		{"no pass", hash("m=65536,t=0,p=2", salt, key)},
		{"five lanes", hash("m=65536,t=3,p=5", salt, key)},
		{"no lane", hash("m=65536,t=3,p=0", salt, key)},
		{"lanes beyond a byte", hash("m=65536,t=3,p=258", salt, key)},
		{"key of 15 bytes", hash("m=65536,t=3,p=2", salt, b64(make([]byte, 15)))},
		{"key of 65 bytes", hash("m=65536,t=3,p=2", salt, b64(make([]byte, 65)))},
		{"empty key", hash("m=65536,t=3,p=2", salt, "")},
		{"salt of 7 bytes", hash("m=65536,t=3,p=2", b64(make([]byte, 7)), key)},
		{"salt of 1 MiB", hash("m=65536,t=3,p=2", b64(make([]byte, 1<<20)), key)},
		{"trailing parameter text", hash("m=65536,t=3,p=2,x=1", salt, key)},
		{"signed parameter", hash("m=+65536,t=3,p=2", salt, key)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := userCodeHashes.Load()
			ok, err := userCodeMatches(tc.encoded, "4711")
			if ok || err == nil {
				t.Fatalf("userCodeMatches(%.80s) = %v, %v; want an error", tc.encoded, ok, err)
			}
			if !strings.HasPrefix(err.Error(), "approvals: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
			if n := userCodeHashes.Load() - before; n != 0 {
				t.Errorf("hashed %d times, want 0", n)
			}
		})
	}
	// What HashUserCode writes still verifies.
	if ok, err := userCodeMatches(HashUserCode("4711"), "4711"); !ok || err != nil {
		t.Fatalf("HashUserCode's own hash: %v, %v", ok, err)
	}
}
