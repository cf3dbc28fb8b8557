package signals_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
)

type cyclic struct{ Next *cyclic }

func TestNamesAreValidatedAndUnique(t *testing.T) {
	t.Parallel()
	reg := signals.MustNewRegistry(signals.RegistryConfig{})
	for _, bad := range []string{"", "Order.Placed", "order..placed", ".order", "order.", "order placed", "1order", "order:placed", "order.9x"} {
		_, err := signals.Register[int](reg, bad)
		require.ErrorIs(t, err, signals.ErrInvalidName, "%q", bad)
	}
	sig := register[int](t, reg, "order.placed")
	_, err := signals.Register[string](reg, "order.placed")
	require.ErrorIs(t, err, signals.ErrDuplicateName)

	sig.Connect("email-receipt", nop[int])
	require.PanicsWithError(t, `signals: duplicate name: signal "order.placed" already has a receiver "email-receipt"`, func() {
		sig.Connect("email-receipt", nop[int])
	})
	for _, bad := range []string{"", "Email", "email receipt", "-x", "a:b"} {
		require.Panics(t, func() { sig.Connect(bad, nop[int]) }, "%q", bad)
	}
	require.Panics(t, func() { sig.Connect("nil-func", nil) })
	require.Panics(t, func() { sig.Connect("bad-queue", nop[int], signals.Queue("no spaces")) })
	require.Panics(t, func() { sig.Connect("bad-retries", nop[int], signals.MaxRetries(-1)) })
	require.Panics(t, func() { sig.Connect("bad-timeout", nop[int], signals.Timeout(0)) })

	// Each registry is its own namespace.
	register[int](t, signals.MustNewRegistry(signals.RegistryConfig{}), "order.placed")
}
