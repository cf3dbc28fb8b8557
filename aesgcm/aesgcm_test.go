package aesgcm_test

import (
	"bytes"
	"crypto/rand"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/aesgcm"
)

var _ signals.Codec = (*aesgcm.Codec)(nil)

func key(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, 32)
	_, err := rand.Read(k)
	require.NoError(t, err)
	return k
}

func TestEncodeDecodeRoundTripsWithAFreshNonce(t *testing.T) {
	t.Parallel()
	c, err := aesgcm.New(1, map[byte][]byte{1: key(t)})
	require.NoError(t, err)
	plain := []byte(`{"email":"ada@example.com"}`)
	a, err := c.Encode(plain)
	require.NoError(t, err)
	b, err := c.Encode(plain)
	require.NoError(t, err)
	require.NotEqual(t, a, b, "a fresh nonce each time")
	require.Len(t, a, len(plain)+29)
	require.False(t, bytes.Contains(a, []byte("ada")))
	got, err := c.Decode(a)
	require.NoError(t, err)
	require.Equal(t, plain, got)
}

func TestKeysRotateByID(t *testing.T) {
	t.Parallel()
	k1, k2 := key(t), key(t)
	before, err := aesgcm.New(1, map[byte][]byte{1: k1})
	require.NoError(t, err)
	after, err := aesgcm.New(2, map[byte][]byte{1: k1, 2: k2})
	require.NoError(t, err)
	old, err := before.Encode([]byte(`{}`))
	require.NoError(t, err)
	got, err := after.Decode(old)
	require.NoError(t, err, "a row written before the rotation still reads")
	require.Equal(t, []byte(`{}`), got)
	fresh, err := after.Encode([]byte(`{}`))
	require.NoError(t, err)
	require.Equal(t, byte(2), fresh[0])
	_, err = before.Decode(fresh)
	require.ErrorContains(t, err, "no key 2")
}

func TestDecodeRefusesTamperedOrShortInput(t *testing.T) {
	t.Parallel()
	c, err := aesgcm.New(7, map[byte][]byte{7: key(t)})
	require.NoError(t, err)
	enc, err := c.Encode([]byte(`{"a":1}`))
	require.NoError(t, err)
	enc[len(enc)-1] ^= 1
	_, err = c.Decode(enc)
	require.ErrorContains(t, err, "open with key 7")
	_, err = c.Decode(enc[:10])
	require.ErrorContains(t, err, "too short")
	_, err = c.Decode(nil)
	require.Error(t, err)
}

func TestNewRefusesBadKeys(t *testing.T) {
	t.Parallel()
	_, err := aesgcm.New(1, map[byte][]byte{1: []byte("short")})
	require.ErrorContains(t, err, "key 1")
	_, err = aesgcm.New(2, map[byte][]byte{1: key(t)})
	require.ErrorContains(t, err, "no key 2")
}

// BenchmarkEncodeDecode is one payload's trip through the codec: encoded at
// send, decoded at receive, for a payload of the bench's size.
func BenchmarkEncodeDecode(b *testing.B) {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	c, err := aesgcm.New(1, map[byte][]byte{1: k})
	if err != nil {
		b.Fatal(err)
	}
	plain := bytes.Repeat([]byte("x"), 150)
	b.ReportAllocs()
	for b.Loop() {
		enc, err := c.Encode(plain)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Decode(enc); err != nil {
			b.Fatal(err)
		}
	}
}
