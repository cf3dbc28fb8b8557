package signals_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/testenv"
	"github.com/stretchr/testify/require"
)

func TestAPanicIsLoggedOncePerAttemptWithABoundedStack(t *testing.T) {
	t.Parallel()
	logs := &testenv.Logs{}
	f := setup(t)
	f.logger = slog.New(logs)
	sig := signals.Register[orderPlaced](f.reg, "order.placed")
	sig.Connect("boom", panickingReceiver, signals.Queue(f.queue), signals.MaxRetries(1), fastRetry)
	f.runDispatcher(t, signals.DispatcherConfig{})
	f.runWorker(t)
	send(t, f.pool, sig, orderPlaced{OrderID: "secret-payload-value"})

	require.Eventually(t, func() bool {
		return len(logs.Find("signals: receiver failed for good; delivery is dead")) == 1
	}, eventually, tick)
	lines := append(logs.Find("signals: receiver failed; will retry"), logs.Find("signals: receiver failed for good; delivery is dead")...)
	require.Len(t, lines, 2, "one line per attempt")
	for _, l := range lines {
		require.Equal(t, "order.placed", l["signal"])
		require.Equal(t, "boom", l["receiver"])
		require.NotEmpty(t, l["event_id"])
		require.NotEmpty(t, l["task_id"])
		require.Equal(t, "signals: receiver panicked: card reader on fire", l["error"], "the error stays one short line")
		require.Contains(t, l["stack"], "panickingReceiver", "the stack shows the receiver")
		require.NotContains(t, l["stack"], "runtime/debug.Stack", "not the recovery's own frames")
		require.LessOrEqual(t, len(l["stack"]), 4<<10+4)
		for _, v := range l {
			require.NotContains(t, v, "secret-payload-value", "payloads are never logged")
		}
	}
}

func panickingReceiver(context.Context, signals.Event[orderPlaced]) error {
	panic("card reader on fire")
}
