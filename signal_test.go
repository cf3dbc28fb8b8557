package signals_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
)

type cyclic struct{ Next *cyclic }

func TestNamesAreValidatedAndUnique(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t, signals.RegistryConfig{})
	for _, bad := range []string{"", "Order.Placed", "order..placed", ".order", "order.", "order placed", "1order", "order:placed", "order.9x"} {
		err := wiringError(t, func() { signals.Register[int](reg, bad) })
		require.ErrorIs(t, err, signals.ErrInvalidName, "%q", bad)
	}
	sig := signals.Register[int](reg, "order.placed")
	err := wiringError(t, func() { signals.Register[string](reg, "order.placed") })
	require.EqualError(t, err, `signals: duplicate name: signal "order.placed" is already registered`)
	require.ErrorIs(t, err, signals.ErrDuplicateName)
	err = wiringError(t, func() { signals.Register[int](nil, "order.shipped") })
	require.ErrorIs(t, err, signals.ErrInvalidConfig)

	sig.Connect("email-receipt", nop[int])
	err = wiringError(t, func() { sig.Connect("email-receipt", nop[int]) })
	require.EqualError(t, err, `signals: duplicate name: signal "order.placed" already has a receiver "email-receipt"`)
	require.ErrorIs(t, err, signals.ErrDuplicateName)
	for _, bad := range []string{"", "Email", "email receipt", "-x", "a:b"} {
		err := wiringError(t, func() { sig.Connect(bad, nop[int]) })
		require.ErrorIs(t, err, signals.ErrInvalidName, "%q", bad)
	}
	err = wiringError(t, func() { sig.Connect("bad-queue", nop[int], signals.Queue("no spaces")) })
	require.ErrorIs(t, err, signals.ErrInvalidName)
	err = wiringError(t, func() { sig.Connect("nil-func", nil) })
	require.ErrorIs(t, err, signals.ErrInvalidConfig)
	for _, opt := range []signals.ReceiverOption{signals.MaxRetries(-1), signals.Timeout(0)} {
		err := wiringError(t, func() { sig.Connect("bad-option", nop[int], opt) })
		require.ErrorIs(t, err, signals.ErrInvalidConfig)
	}

	// Each registry is its own namespace.
	signals.Register[int](newRegistry(t, signals.RegistryConfig{}), "order.placed")
}

// TestSafelyTwinsReturnWhatWiringPanicsWith checks that RegisterSafely and
// ConnectSafely return, rather than panic with, the errors of Register and
// Connect, and wire nothing when they do.
func TestSafelyTwinsReturnWhatWiringPanicsWith(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t, signals.RegistryConfig{})
	sig, err := signals.RegisterSafely[int](reg, "order.placed")
	require.NoError(t, err)
	_, err = signals.RegisterSafely[int](reg, "order.placed")
	require.Equal(t, wiringError(t, func() { signals.Register[int](reg, "order.placed") }), err)
	_, err = signals.RegisterSafely[int](reg, "Order")
	require.ErrorIs(t, err, signals.ErrInvalidName)
	_, err = signals.RegisterSafely[int](nil, "order.shipped")
	require.ErrorIs(t, err, signals.ErrInvalidConfig)

	require.NoError(t, sig.ConnectSafely("email-receipt", nop[int]))
	err = sig.ConnectSafely("email-receipt", nop[int])
	require.Equal(t, wiringError(t, func() { sig.Connect("email-receipt", nop[int]) }), err)
	require.ErrorIs(t, sig.ConnectSafely("nil-func", nil), signals.ErrInvalidConfig)
	require.ErrorIs(t, sig.ConnectSafely("retry", nop[int], signals.MaxRetries(-1)), signals.ErrInvalidConfig)
	require.NoError(t, sig.ConnectSafely("retry", nop[int]), "a refused receiver was not connected")
}
