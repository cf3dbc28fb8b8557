package backoff

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestDelayGrowsCapsAndJitters(t *testing.T) {
	const min, max = 100 * time.Millisecond, 2 * time.Second
	cases := []struct {
		attempt int
		ceiling time.Duration
	}{
		{1, 100 * time.Millisecond},
		{2, 200 * time.Millisecond},
		{3, 400 * time.Millisecond},
		{5, 1600 * time.Millisecond},
		{6, max},
		{1000, max},
	}
	for _, c := range cases {
		distinct := map[time.Duration]bool{}
		for range 200 {
			d := Delay(c.attempt, min, max)
			require.GreaterOrEqual(t, d, c.ceiling/2, "attempt %d", c.attempt)
			require.LessOrEqual(t, d, c.ceiling, "attempt %d", c.attempt)
			distinct[d] = true
		}
		require.Greater(t, len(distinct), 1, "attempt %d is jittered", c.attempt)
	}
}
