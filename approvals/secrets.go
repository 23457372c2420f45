package approvals

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	"golang.org/x/crypto/argon2"
)

// newID returns prefix + 128 random bits, base64url: an identifier nobody can guess.
func newID(prefix string) string {
	return prefix + randomString(16)
}

// NewSecret returns a 256-bit random client secret, base64url without padding.
func NewSecret() string { return randomString(32) }

func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// HashSecret returns SHA-256 of a high-entropy secret. A fast hash is right
// here: 256 random bits cannot be brute-forced, and client authentication is
// on the hot path of every token request.
func HashSecret(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// secretMatches compares a presented secret with a stored hash in constant time.
func secretMatches(stored []byte, presented string) bool {
	if len(stored) != sha256.Size {
		// Still spend the same work, then fail.
		stored = make([]byte, sha256.Size)
		subtle.ConstantTimeCompare(stored, HashSecret(presented))
		return false
	}
	return subtle.ConstantTimeCompare(stored, HashSecret(presented)) == 1
}

// argon2id parameters for low-entropy secrets (user codes): RFC 9106 §4's
// second recommended option, memory-constrained.
const (
	argonTime    = 3
	argonMemory  = 64 * 1024
	argonThreads = 2
	argonKeyLen  = 32
)

// HashUserCode hashes a user code with argon2id into a self-describing string.
func HashUserCode(code string) string {
	salt := make([]byte, 16)
	_, _ = rand.Read(salt)
	key := argon2.IDKey([]byte(code), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key))
}

// userCodeHashes counts the argon2id evaluations of stored user codes, so
// that tests can tell how many guesses were actually tried.
var userCodeHashes atomic.Int64

// Caps on the argon2id parameters read from a stored hash: they come from
// the database, so without caps a hash written by anyone but HashUserCode
// could make one check cost any memory or time, or panic the hash (t or p
// of 0). HashUserCode writes the maxima.
const (
	argonMinSalt, argonMaxSalt = 8, 64 // RFC 9106 §3.1: 16 bytes recommended
	argonMinKey, argonMaxKey   = 16, 64
	argonMaxThreads            = 4
)

// userCodeMatches checks code against a HashUserCode string in constant time.
func userCodeMatches(encoded, code string) (bool, error) {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false, errors.New("approvals: malformed user code hash")
	}
	var version int
	var m, t, p uint32
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return false, errors.New("approvals: unsupported argon2 version")
	}
	// Read back exactly: no signs, leading zeros or trailing text.
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil ||
		parts[3] != fmt.Sprintf("m=%d,t=%d,p=%d", m, t, p) {
		return false, errors.New("approvals: malformed argon2 parameters")
	}
	// RFC 9106 §3.1: at least 8 KiB of memory per lane.
	if p < 1 || p > argonMaxThreads || t < 1 || t > argonTime || m < 8*p || m > argonMemory {
		return false, fmt.Errorf("approvals: argon2 parameters m=%d,t=%d,p=%d beyond m≤%d,t≤%d,p≤%d", m, t, p, argonMemory, argonTime, argonMaxThreads)
	}
	if len(parts[4]) > base64.RawStdEncoding.EncodedLen(argonMaxSalt) || len(parts[5]) > base64.RawStdEncoding.EncodedLen(argonMaxKey) {
		return false, errors.New("approvals: user code hash has an oversized salt or key")
	}
	salt, err1 := base64.RawStdEncoding.DecodeString(parts[4])
	want, err2 := base64.RawStdEncoding.DecodeString(parts[5])
	if err1 != nil || err2 != nil {
		return false, errors.New("approvals: malformed user code hash")
	}
	if len(salt) < argonMinSalt || len(want) < argonMinKey || len(want) > argonMaxKey {
		return false, errors.New("approvals: user code hash has a salt or key of the wrong length")
	}
	userCodeHashes.Add(1)
	got := argon2.IDKey([]byte(code), salt, t, m, uint8(p), uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}
