package signals

import (
	"errors"
	"fmt"

	"github.com/dj-signals/signals/internal/kithook"
)

func init() {
	kithook.DecodePayload = func(reg any, stored []byte) ([]byte, error) {
		return reg.(*Registry).decodePayload(stored)
	}
}

// Codec encodes payloads before they are stored and decodes them before a
// receiver sees them: set one in [RegistryConfig].Codec to keep personal
// data out of PostgreSQL, Redis and the dead letters in clear, as an
// AES-GCM codec does (see the example). Encode gets the payload's JSON and
// Decode must return it as it was; both must be safe for concurrent use.
// To rotate keys, write the key's ID into what Encode returns and keep the
// old keys for Decode until no row encoded with them is left.
type Codec interface {
	Encode(json []byte) ([]byte, error)
	Decode(encoded []byte) ([]byte, error)
}

// encodedMark starts a stored payload that a Codec encoded. JSON text never
// starts with a NUL byte, so a reader without the codec tells an encoded
// payload from JSON, and a registry that gains a Codec still reads the rows
// it wrote before.
const encodedMark = 0x00

// errEncoded is the error of reading an encoded payload without its codec.
var errEncoded = errors.New("the payload is encoded and this registry has no Codec (RegistryConfig.Codec) to decode it")

// encodePayload is body as the registry stores it: with the registry's
// codec, marked; without one, as it is.
func (r *Registry) encodePayload(body []byte) ([]byte, error) {
	if r.cfg.Codec == nil {
		return body, nil
	}
	enc, err := r.cfg.Codec.Encode(body)
	if err != nil {
		return nil, fmt.Errorf("encode the payload with RegistryConfig.Codec: %w", err)
	}
	return append([]byte{encodedMark}, enc...), nil
}

// decodePayload is the JSON of a stored payload, decoded with the
// registry's codec when it is encoded. It returns errEncoded for an encoded
// payload the registry has no codec for.
func (r *Registry) decodePayload(stored []byte) ([]byte, error) {
	if len(stored) == 0 || stored[0] != encodedMark {
		return stored, nil
	}
	if r.cfg.Codec == nil {
		return nil, errEncoded
	}
	body, err := r.cfg.Codec.Decode(stored[1:])
	if err != nil {
		return nil, fmt.Errorf("decode the payload with RegistryConfig.Codec: %w", err)
	}
	return body, nil
}

// readablePayload is a stored payload for an operator: its JSON, or nil
// and true when it is encoded and cannot be decoded here.
func (r *Registry) readablePayload(stored []byte) (body []byte, encoded bool) {
	body, err := r.decodePayload(stored)
	if err != nil {
		return nil, true
	}
	return body, false
}
