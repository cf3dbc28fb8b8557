package signals_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/testenv"
)

// recorder is a middleware that stamps a header at send, passes a ctx
// value to the receiver, and records what each step saw.
type recorder struct {
	name string

	mu       sync.Mutex
	sends    []signals.SendInfo
	enqueues []signals.EnqueueInfo
	receives []signals.ReceiveInfo
	order    *[]string // shared by the recorders of one test: who ran when
}

type traceKey struct{}

// middleware is r as a Middleware.
func (r *recorder) middleware() signals.Middleware {
	return signals.Middleware{Send: r.Send, Enqueue: r.Enqueue, Receive: r.Receive}
}

func (r *recorder) Send(ctx context.Context, s *signals.SendInfo, next func(context.Context) error) error {
	r.log("send " + r.name)
	if s.Headers == nil {
		s.Headers = map[string]string{}
	}
	s.Headers["trace-"+r.name] = "from-" + s.Signal
	err := next(ctx)
	r.mu.Lock()
	r.sends = append(r.sends, *s)
	r.mu.Unlock()
	return err
}

func (r *recorder) Enqueue(ctx context.Context, e *signals.EnqueueInfo, next func(context.Context) error) error {
	err := next(ctx)
	r.mu.Lock()
	r.enqueues = append(r.enqueues, *e)
	r.mu.Unlock()
	return err
}

func (r *recorder) Receive(ctx context.Context, rc *signals.ReceiveInfo, next func(context.Context) error) error {
	err := next(context.WithValue(ctx, traceKey{}, rc.Headers["trace-"+r.name]))
	r.mu.Lock()
	r.receives = append(r.receives, *rc)
	r.mu.Unlock()
	return err
}

func (r *recorder) log(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	*r.order = append(*r.order, s)
}

func (r *recorder) snapshot() ([]signals.SendInfo, []signals.EnqueueInfo, []signals.ReceiveInfo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]signals.SendInfo(nil), r.sends...), append([]signals.EnqueueInfo(nil), r.enqueues...), append([]signals.ReceiveInfo(nil), r.receives...)
}

func TestMiddlewareSeesEachStepAndHeadersTravel(t *testing.T) {
	t.Parallel()
	var order []string
	outer, inner := &recorder{name: "outer", order: &order}, &recorder{name: "inner", order: &order}
	f := setupRegistry(t, signals.RegistryConfig{Middleware: []signals.Middleware{outer.middleware(), inner.middleware()}})
	sig := signals.Register[orderPlaced](f.reg, "order.placed")
	var mu sync.Mutex
	seen := map[string]any{}
	sig.Connect("ok", func(ctx context.Context, e signals.Event[orderPlaced]) error {
		mu.Lock()
		seen["ok"] = ctx.Value(traceKey{})
		mu.Unlock()
		return nil
	}, signals.Queue(f.queue))
	sig.Connect("refuse", func(context.Context, signals.Event[orderPlaced]) error {
		return signals.Permanent(errors.New("no"))
	}, signals.Queue(f.queue))
	f.runDispatcher(t, signals.DispatcherConfig{})
	f.runWorker(t)
	eventID := send(t, f.pool, sig, orderPlaced{OrderID: "o-1"})

	require.Eventually(t, func() bool {
		_, _, r := inner.snapshot()
		return len(r) == 2 && f.pending(t) == 0
	}, eventually, tick)
	require.Equal(t, []string{"send outer", "send inner"}, order, "the first middleware is the outermost")

	sends, enqueues, receives := inner.snapshot()
	require.Len(t, sends, 1)
	require.Equal(t, eventID, sends[0].EventID)
	require.Equal(t, "order.placed", sends[0].Signal)
	require.ElementsMatch(t, []string{"ok", "refuse"}, sends[0].Receivers)
	want := map[string]string{"trace-outer": "from-order.placed", "trace-inner": "from-order.placed"}
	require.Len(t, enqueues, 2)
	for _, e := range enqueues {
		require.Equal(t, want, e.Headers, "the headers are stored with the row")
		require.Equal(t, eventID, e.EventID)
		require.False(t, e.Duplicate)
		require.False(t, e.Resent, "a first enqueue")
		require.Equal(t, f.queue, e.Queue)
	}
	byReceiver := map[string]signals.ReceiveInfo{}
	for _, r := range receives {
		require.Equal(t, want, r.Headers, "and carried to the worker")
		require.Equal(t, 1, r.Attempt)
		byReceiver[r.Receiver] = r
	}
	require.Empty(t, byReceiver["ok"].Dead)
	require.Equal(t, signals.ReasonPermanent, byReceiver["refuse"].Dead)
	mu.Lock()
	require.Equal(t, "from-order.placed", seen["ok"], "the ctx a middleware passes on is the receiver's")
	mu.Unlock()
	dead, err := f.ledger(t).DeadLetters(t.Context(), signals.DeadFilter{})
	require.NoError(t, err)
	require.Len(t, dead, 1)
	require.Equal(t, want, dead[0].Headers, "a dead letter keeps the event's headers")
}

func TestMiddlewareMayNotUseTheReservedHeaderPrefix(t *testing.T) {
	t.Parallel()
	f := setupRegistry(t, signals.RegistryConfig{Middleware: []signals.Middleware{badHeader}})
	sig := nopSignal(t, f, "r")
	_, err := commit(t.Context(), f.pool, sig, orderPlaced{OrderID: "o-1"})
	require.ErrorIs(t, err, signals.ErrInvalidConfig)
	require.Zero(t, f.pending(t), "nothing written")
}

// badHeader is a middleware that sets a header of the library's own.
var badHeader = signals.Middleware{
	Send: func(ctx context.Context, s *signals.SendInfo, next func(context.Context) error) error {
		s.Headers = map[string]string{"signals-task-id": ulid.Make().String()}
		return next(ctx)
	},
}

func TestMiddlewareSeesWhatRepairSendsAgain(t *testing.T) {
	t.Parallel()
	var order []string
	rec := &recorder{name: "r", order: &order}
	srv := testenv.StartRedis(t)
	f := setupRegistry(t, signals.RegistryConfig{Middleware: []signals.Middleware{rec.middleware()}})
	f.redis = asynq.RedisClientOpt{Addr: srv.Addr}
	sig := nopSignal(t, f, "r")
	f.runDispatcher(t, signals.DispatcherConfig{})
	send(t, f.pool, sig, orderPlaced{OrderID: "o-1"})
	require.Eventually(t, func() bool { _, e, _ := rec.snapshot(); return len(e) == 1 }, eventually, tick)

	rc := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rc.Close()
	require.NoError(t, rc.FlushAll(t.Context()).Err())
	require.Eventually(t, func() bool { _, e, _ := rec.snapshot(); return len(e) == 2 }, eventually, tick, "sent again after the flush")
	_, enqueues, _ := rec.snapshot()
	require.False(t, enqueues[0].Resent)
	require.True(t, enqueues[1].Resent, "the second enqueue is a repair's")
	require.Equal(t, enqueues[0].TaskID, enqueues[1].TaskID)
}

func TestRegistryUseAddsMiddlewareAfterTheConfigs(t *testing.T) {
	t.Parallel()
	var order []string
	first, second := &recorder{name: "first", order: &order}, &recorder{name: "second", order: &order}
	f := setupRegistry(t, signals.RegistryConfig{Middleware: []signals.Middleware{first.middleware()}})
	f.reg.Use(second.middleware())
	sig := nopSignal(t, f, "r")
	send(t, f.pool, sig, orderPlaced{OrderID: "o-1"})
	require.Equal(t, []string{"send first", "send second"}, order)
}
