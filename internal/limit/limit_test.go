package limit

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dj-signals/signals/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type testBundle struct {
	rdb redis.UniversalClient
	key Key
}

// setup returns a Limiter on the test Redis and a key of the test's own,
// whose Redis keys are deleted when the test ends.
func setup(t *testing.T) (*Limiter, *testBundle) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr()})
	key := Key{Schema: testenv.Queue(t), Signal: "order.placed", Receiver: "partner"}
	t.Cleanup(func() {
		pre := key.prefix()
		_ = rdb.Del(context.Background(), pre+"holders", pre+"bucket", pre+"waiting", pre+"return", pre+"meta").Err()
		_ = rdb.Close()
	})
	return New(rdb), &testBundle{rdb: rdb, key: key}
}

func TestConcurrency(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	lim := Limits{Concurrency: 2}

	t.Run("a full semaphore turns a run away until a slot is released", func(t *testing.T) {
		t.Parallel()
		l, b := setup(t)
		p1, wait, err := l.Acquire(ctx, b.key, "t1", lim, time.Minute)
		require.NoError(t, err)
		require.Zero(t, wait)
		_, wait, err = l.Acquire(ctx, b.key, "t2", lim, time.Minute)
		require.NoError(t, err)
		require.Zero(t, wait)

		p3, wait, err := l.Acquire(ctx, b.key, "t3", lim, time.Minute)
		require.NoError(t, err)
		require.Positive(t, wait, "the third run waits")
		require.NoError(t, p3.Release(ctx), "a zero Permit releases nothing")
		n, err := b.rdb.ZCard(ctx, b.key.prefix()+"holders").Result()
		require.NoError(t, err)
		require.EqualValues(t, 2, n)

		require.NoError(t, p1.Release(ctx))
		require.NoError(t, p1.Release(ctx), "a second release is harmless")
		_, wait, err = l.Acquire(ctx, b.key, "t3", lim, time.Minute)
		require.NoError(t, err)
		require.Zero(t, wait, "the waiting run takes the freed slot")
	})

	t.Run("a fresh run goes behind the runs already waiting", func(t *testing.T) {
		t.Parallel()
		l, b := setup(t)
		lim := Limits{Concurrency: 1}
		p1, _, err := l.Acquire(ctx, b.key, "t1", lim, time.Minute)
		require.NoError(t, err)
		_, wait, err := l.Acquire(ctx, b.key, "t2", lim, time.Minute)
		require.NoError(t, err)
		require.Positive(t, wait)
		require.NoError(t, p1.Release(ctx))

		_, wait, err = l.Acquire(ctx, b.key, "t3", lim, time.Minute)
		require.NoError(t, err)
		require.Positive(t, wait, "t3 has not waited: t2 goes first")
		_, wait, err = l.Acquire(ctx, b.key, "t2", lim, time.Minute)
		require.NoError(t, err)
		require.Zero(t, wait)
	})

	t.Run("a slot never released frees itself when its lease expires", func(t *testing.T) {
		t.Parallel()
		l, b := setup(t)
		lim := Limits{Concurrency: 1}
		_, _, err := l.Acquire(ctx, b.key, "killed", lim, 200*time.Millisecond)
		require.NoError(t, err)
		start := time.Now()
		_, wait, err := l.Acquire(ctx, b.key, "next", lim, time.Minute)
		require.NoError(t, err)
		require.Positive(t, wait)
		require.LessOrEqual(t, wait, 200*time.Millisecond, "the wait is capped by the holder's lease")
		testenv.Eventually(t, 5*time.Second, func() bool {
			_, wait, err = l.Acquire(ctx, b.key, "next", lim, time.Minute)
			require.NoError(t, err)
			return wait == 0
		}, "the expired lease's slot is free")
		require.GreaterOrEqual(t, time.Since(start), 150*time.Millisecond, "not before the lease expired")
	})

	t.Run("waits grow with the line and the measured hold time", func(t *testing.T) {
		t.Parallel()
		l, b := setup(t)
		lim := Limits{Concurrency: 1}
		for _, held := range []time.Duration{1001 * time.Millisecond, 1002 * time.Millisecond} {
			p, _, err := l.Acquire(ctx, b.key, "t0", lim, time.Minute)
			require.NoError(t, err)
			p.start = time.Now().Add(-held) // as if held that long
			require.NoError(t, p.Release(ctx))
		}
		p, _, err := l.Acquire(ctx, b.key, "t1", lim, time.Minute)
		require.NoError(t, err)
		var waits []time.Duration
		for _, task := range []string{"w1", "w2", "w3"} {
			_, wait, err := l.Acquire(ctx, b.key, task, lim, time.Minute)
			require.NoError(t, err, "an average hold of a fraction of a millisecond")
			waits = append(waits, wait.Round(10*time.Millisecond))
		}
		require.Equal(t, []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}, waits)
		require.NoError(t, p.Release(ctx))
	})
}

func TestRate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("a burst goes at once, then one run per token", func(t *testing.T) {
		t.Parallel()
		l, b := setup(t)
		lim := Limits{Rate: 1, Burst: 3} // slow enough that no token refills while the burst is taken
		for i := range 3 {
			_, wait, err := l.Acquire(ctx, b.key, "burst"+string(rune('a'+i)), lim, time.Minute)
			require.NoError(t, err)
			require.Zero(t, wait, "run %d of the burst", i)
		}
		start := time.Now()
		_, wait, err := l.Acquire(ctx, b.key, "next", lim, time.Minute)
		require.NoError(t, err)
		require.Positive(t, wait)
		require.LessOrEqual(t, wait, time.Second, "one token refills in 1/rate")
		testenv.Eventually(t, 5*time.Second, func() bool {
			_, wait, err = l.Acquire(ctx, b.key, "next", lim, time.Minute)
			require.NoError(t, err)
			return wait == 0
		}, "a token refills")
		require.GreaterOrEqual(t, time.Since(start), 600*time.Millisecond)
	})

	t.Run("the bucket refills up to the burst and no further", func(t *testing.T) {
		t.Parallel()
		l, b := setup(t)
		lim := Limits{Rate: 10, Burst: 2}
		for _, task := range []string{"a", "b"} {
			_, wait, err := l.Acquire(ctx, b.key, task, lim, time.Minute)
			require.NoError(t, err)
			require.Zero(t, wait)
		}
		// Idle long enough for 20 tokens; the bucket holds 2.
		require.Eventually(t, func() bool {
			tokens, err := b.rdb.HGet(ctx, b.key.prefix()+"bucket", "ts").Int64()
			require.NoError(t, err)
			now, err := b.rdb.Time(ctx).Result()
			require.NoError(t, err)
			return now.UnixMilli()-tokens >= 2000
		}, 5*time.Second, 10*time.Millisecond)
		begin, err := b.rdb.Time(ctx).Result()
		require.NoError(t, err)
		var ran int
		for _, task := range []string{"c", "d", "e"} {
			_, wait, err := l.Acquire(ctx, b.key, task, lim, time.Minute)
			require.NoError(t, err)
			if wait == 0 {
				ran++
			}
		}
		end, err := b.rdb.Time(ctx).Result()
		require.NoError(t, err)
		// The burst, plus a token per 100 ms the three calls took (on a
		// loaded machine they may take that long).
		refilled := int(end.Sub(begin) / (100 * time.Millisecond))
		require.Equal(t, min(3, 2+refilled), ran, "the burst after an idle spell, and no more (calls took %v)", end.Sub(begin))
	})

	t.Run("each waiting run is told its place in line", func(t *testing.T) {
		t.Parallel()
		l, b := setup(t)
		lim := Limits{Rate: 1, Burst: 1}
		begin, err := b.rdb.Time(ctx).Result()
		require.NoError(t, err)
		_, _, err = l.Acquire(ctx, b.key, "first", lim, time.Minute)
		require.NoError(t, err)
		var waits []time.Duration
		for _, task := range []string{"w1", "w2", "w3"} {
			_, wait, err := l.Acquire(ctx, b.key, task, lim, time.Minute)
			require.NoError(t, err)
			waits = append(waits, wait)
		}
		end, err := b.rdb.Time(ctx).Result()
		require.NoError(t, err)
		// Each wait counts from its own call: the calls' spread is slack.
		slack := float64(50*time.Millisecond + end.Sub(begin))
		for i, w := range waits {
			want := time.Duration(i+1) * time.Second
			require.InDelta(t, want, w, slack, "waiter %d", i+1)
		}
		_, again, err := l.Acquire(ctx, b.key, "w2", lim, time.Minute)
		require.NoError(t, err)
		later, err := b.rdb.Time(ctx).Result()
		require.NoError(t, err)
		require.InDelta(t, waits[1], again, float64(50*time.Millisecond+later.Sub(begin)), "a waiter coming back keeps its place")
	})

	t.Run("a slot and a token are taken together or not at all", func(t *testing.T) {
		t.Parallel()
		l, b := setup(t)
		lim := Limits{Concurrency: 1, Rate: 1, Burst: 1}
		p, wait, err := l.Acquire(ctx, b.key, "a", lim, time.Minute)
		require.NoError(t, err)
		require.Zero(t, wait)
		require.NoError(t, p.Release(ctx))
		_, wait, err = l.Acquire(ctx, b.key, "b", lim, time.Minute)
		require.NoError(t, err)
		require.Positive(t, wait, "the slot is free, the token is not")
		n, err := b.rdb.ZCard(ctx, b.key.prefix()+"holders").Result()
		require.NoError(t, err)
		require.Zero(t, n, "the turned-away run took no slot")
	})
}

func TestKeysApart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l, b := setup(t)
	other := b.key
	other.Schema += "_other"
	t.Cleanup(func() {
		pre := other.prefix()
		_ = b.rdb.Del(context.Background(), pre+"holders", pre+"waiting", pre+"return").Err()
	})
	lim := Limits{Concurrency: 1}
	_, wait, err := l.Acquire(ctx, b.key, "t", lim, time.Minute)
	require.NoError(t, err)
	require.Zero(t, wait)
	_, wait, err = l.Acquire(ctx, other, "t", lim, time.Minute)
	require.NoError(t, err)
	require.Zero(t, wait, "a registry on another schema has a limit of its own")
}
