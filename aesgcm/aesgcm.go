// Package aesgcm is a [signals.Codec] that encrypts payloads with AES-GCM,
// from the standard library, with keys that rotate by ID: set it in
// signals.RegistryConfig.Codec so that payloads are stored encrypted in
// PostgreSQL, Redis and the dead letters.
//
// What it stores is one byte of key ID, a fresh 12-byte nonce, then the
// sealed payload and its 16-byte tag: 29 bytes more than the JSON. To
// rotate, add the new key, make it current, and keep the old one until no
// row it encrypted is left in the ledger (dead letters included).
package aesgcm

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
)

// Codec encrypts with its current key and decrypts with any key it holds.
// It is safe for concurrent use.
type Codec struct {
	current byte
	keys    map[byte]cipher.AEAD
}

// New returns a Codec that encrypts with keys[current] and decrypts with
// any of keys. Each key is 16, 24 or 32 bytes (AES-128, -192 or -256).
func New(current byte, keys map[byte][]byte) (*Codec, error) {
	c := &Codec{current: current, keys: make(map[byte]cipher.AEAD, len(keys))}
	for id, key := range keys {
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("aesgcm: key %d: %w", id, err)
		}
		if c.keys[id], err = cipher.NewGCM(block); err != nil {
			return nil, fmt.Errorf("aesgcm: key %d: %w", id, err)
		}
	}
	if _, ok := c.keys[current]; !ok {
		return nil, fmt.Errorf("aesgcm: no key %d to encrypt with: pass it in keys", current)
	}
	return c, nil
}

// Encode returns the current key's ID, a fresh nonce and the sealed
// payload.
func (c *Codec) Encode(plain []byte) ([]byte, error) {
	aead := c.keys[c.current]
	out := make([]byte, 1+aead.NonceSize(), 1+aead.NonceSize()+len(plain)+aead.Overhead())
	out[0] = c.current
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, fmt.Errorf("aesgcm: nonce: %w", err)
	}
	return aead.Seal(out, out[1:], plain, nil), nil
}

// Decode opens what Encode returned, with the key whose ID it starts with.
func (c *Codec) Decode(enc []byte) ([]byte, error) {
	if len(enc) == 0 {
		return nil, errors.New("aesgcm: empty payload")
	}
	aead, ok := c.keys[enc[0]]
	if !ok {
		return nil, fmt.Errorf("aesgcm: no key %d: keep a retired key until no row it encrypted is left", enc[0])
	}
	if len(enc) < 1+aead.NonceSize()+aead.Overhead() {
		return nil, errors.New("aesgcm: payload too short to be sealed")
	}
	nonce, sealed := enc[1:1+aead.NonceSize()], enc[1+aead.NonceSize():]
	plain, err := aead.Open(nil, nonce, sealed, nil)
	if err != nil {
		return nil, fmt.Errorf("aesgcm: open with key %d: %w", enc[0], err)
	}
	return plain, nil
}
