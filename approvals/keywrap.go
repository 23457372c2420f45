package approvals

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
)

// KEKSize is the length of the key-encryption key: 256 bits, for AES-256.
const KEKSize = 32

// errSealed is returned by open for every failure, so that a caller (or an
// attacker who can write to the database) learns nothing about which check
// failed.
var errSealed = errors.New("approvals: sealed value cannot be opened (wrong key, wrong kid or tampered)")

// seal encrypts plaintext with AES-256-GCM under key. The output is a random
// 96-bit nonce followed by the ciphertext and the 128-bit tag. aad is
// authenticated but not stored: the signing keys pass their kid, so that a
// sealed private key cannot be moved to another row.
func seal(key, plaintext, aad []byte) ([]byte, error) {
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	return aead.Seal(nil, nil, plaintext, aad), nil
}

// open reverses seal. Any change to the sealed bytes, a different aad or a
// different key makes it fail.
func open(key, sealed, aad []byte) ([]byte, error) {
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	plaintext, err := aead.Open(nil, nil, sealed, aad)
	if err != nil {
		return nil, errSealed
	}
	return plaintext, nil
}

// newAEAD returns AES-256-GCM that draws a random 96-bit nonce for every Seal
// and prefixes it to the output. Random nonces are safe for up to 2^32
// messages under one key (NIST SP 800-38D §8.3); signing keys are sealed a
// handful of times a year.
func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != KEKSize {
		return nil, fmt.Errorf("approvals: sealing key is %d bytes, want %d", len(key), KEKSize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("approvals: sealing key: %w", err)
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, fmt.Errorf("approvals: sealing key: %w", err)
	}
	return aead, nil
}

// DeriveKey derives a 32-byte key for one purpose from the key-encryption
// key, with HKDF-SHA256 (RFC 5869) and purpose as the info string, so that
// no key is ever used for two purposes. The auth_req_id MAC key is
// DeriveKey(kek, "countersign auth_req_id v1"); the signing keys are sealed
// under DeriveKey(kek, "countersign signing_keys v1").
func DeriveKey(kek []byte, purpose string) []byte {
	// RFC 5869 §3.1: the salt is optional; the KEK is already a uniformly
	// random key, so extract with the default (all-zero) salt.
	key, err := hkdf.Key(sha256.New, kek, nil, purpose, 32)
	if err != nil {
		// hkdf.Key fails only for lengths above 255*32 bytes.
		panic("approvals: " + err.Error())
	}
	return key
}
