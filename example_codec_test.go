package signals_test

import (
	"crypto/rand"
	"fmt"
	"log"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/aesgcm"
)

// A registry with a Codec stores every payload encrypted: in the outbox, in
// Redis and in the dead letters. Receivers, the Ledger and signalstest see
// it decoded. Here the key rotates from 1 to 2: what key 1 encrypted still
// decrypts.
func ExampleCodec() {
	key1, key2 := make([]byte, 32), make([]byte, 32) // from your secret store
	for _, k := range [][]byte{key1, key2} {
		if _, err := rand.Read(k); err != nil {
			log.Fatal(err)
		}
	}
	before, err := aesgcm.New(1, map[byte][]byte{1: key1})
	if err != nil {
		log.Fatal(err)
	}
	after, err := aesgcm.New(2, map[byte][]byte{1: key1, 2: key2})
	if err != nil {
		log.Fatal(err)
	}
	reg, err := signals.NewRegistry(signals.RegistryConfig{Schema: "example_codec", Codec: after})
	if err != nil {
		log.Fatal(err)
	}
	_ = reg // senders, Dispatcher, Worker and Ledger all take this registry

	old, err := before.Encode([]byte(`{"email":"ada@example.com"}`))
	if err != nil {
		log.Fatal(err)
	}
	plain, err := after.Decode(old)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("written with key %d, read after the rotation: %s\n", old[0], plain)
	fresh, err := after.Encode(plain)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("written now with key %d\n", fresh[0])
	// Output:
	// written with key 1, read after the rotation: {"email":"ada@example.com"}
	// written now with key 2
}
