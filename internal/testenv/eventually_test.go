package testenv_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals/internal/testenv"
)

func TestEventually(t *testing.T) {
	t.Parallel()

	t.Run("returns once cond holds", func(t *testing.T) {
		t.Parallel()
		calls := 0
		testenv.Eventually(t, time.Minute, func() bool { calls++; return calls == 3 }, "never")
		require.Equal(t, 3, calls)
	})

	t.Run("fails the test after timeout", func(t *testing.T) {
		t.Parallel()
		f := &fakeTB{TB: t}
		const timeout = 50 * time.Millisecond
		start := time.Now()
		testenv.Eventually(f, timeout, func() bool { return false }, "waited for %s", "godot")
		require.Equal(t, "waited for godot", f.failed)
		require.GreaterOrEqual(t, time.Since(start), timeout)
	})
}
