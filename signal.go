package signals

import (
	"fmt"
	"reflect"
	"sync"

	"github.com/dj-signals/signals/internal/envelope"
	"github.com/dj-signals/signals/internal/kithook"
	"github.com/dj-signals/signals/internal/store"
)

// Signal is a typed signal with a stable name. Receivers connect to it at
// wiring time with [Signal.Connect]; [Signal.SendReliable] writes one outbox
// row per connected receiver in the caller's transaction. A Signal is safe
// for concurrent use.
type Signal[T any] struct {
	name string
	reg  *Registry

	mu        sync.RWMutex
	receivers map[string]*receiver[T]
	targets   []store.Target   // one per receiver, TaskID left zero
	keyOf     []func(T) string // one per target: its OrderBy, or nil
}

type receiver[T any] struct {
	fn   ReceiverFunc[T]
	opts receiverOptions
}

// New creates a signal named name in [DefaultRegistry]. It is meant for
// package-level variables and panics, as [Register] does, if the name is
// invalid or taken.
//
// Names are lowercase dot-separated words such as "order.placed" and must
// stay stable: they are stored in outbox rows and queued tasks.
func New[T any](name string) *Signal[T] {
	return Register[T](DefaultRegistry, name)
}

// Register creates a signal named name in r, for a registry of the
// application's own. Like [New] and [Signal.Connect], it is wiring: it
// panics on a programmer error, as http.Handle does, with the error
// [RegisterSafely] returns.
func Register[T any](r *Registry, name string) *Signal[T] {
	s, err := RegisterSafely[T](r, name)
	if err != nil {
		panic(err)
	}
	return s
}

// RegisterSafely is [Register] returning its error instead of panicking, for
// signals declared at run time (from configuration, say): an error wrapping
// [ErrInvalidName] for a name that is not lowercase dot-separated words,
// [ErrDuplicateName] if r already has a signal of that name, or
// [ErrInvalidConfig] for a nil r. RegisterSafely(DefaultRegistry, name) is
// [New]'s.
func RegisterSafely[T any](r *Registry, name string) (*Signal[T], error) {
	if r == nil {
		return nil, fmt.Errorf("%w: Register of signal %q needs a registry (signals.DefaultRegistry, or one from NewRegistry)", ErrInvalidConfig, name)
	}
	if err := envelope.ValidateSignal(name); err != nil {
		return nil, err
	}
	s := &Signal[T]{name: name, reg: r, receivers: map[string]*receiver[T]{}}
	if err := r.add(name, s); err != nil {
		return nil, err
	}
	return s, nil
}

// Name returns the signal's name.
func (s *Signal[T]) Name() string { return s.name }

func init() {
	kithook.RegistryOf = func(signal any) any {
		return signal.(interface{ registry() *Registry }).registry()
	}
}

// registry is the registry the signal belongs to, for package signalstest.
func (s *Signal[T]) registry() *Registry { return s.reg }

// Connect registers fn as the receiver named name. It is meant for init-time
// wiring and panics on a programmer error, as http.HandleFunc does, with the
// error [Signal.ConnectSafely] returns.
//
// Every binary that sends the signal must connect the same receivers: the
// receivers connected at send time are the ones that will run.
func (s *Signal[T]) Connect(name string, fn ReceiverFunc[T], opts ...ReceiverOption) {
	if err := s.ConnectSafely(name, fn, opts...); err != nil {
		panic(err)
	}
}

// ConnectSafely is [Signal.Connect] returning its error instead of
// panicking, for receivers connected at run time: an error wrapping
// [ErrInvalidName] for a bad name, [ErrDuplicateName] for a name already
// connected to this signal, or [ErrInvalidConfig] for a nil fn, a bad
// option, or a queue that a registry on another schema uses.
func (s *Signal[T]) ConnectSafely(name string, fn ReceiverFunc[T], opts ...ReceiverOption) error {
	if err := envelope.ValidateReceiver(name); err != nil {
		return err
	}
	if fn == nil {
		return fmt.Errorf("%w: receiver %q of signal %q has a nil func", ErrInvalidConfig, name, s.name)
	}
	o := defaultReceiverOptions(s.reg.cfg.Queue)
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return fmt.Errorf("receiver %q of signal %q: %w", name, s.name, err)
		}
	}
	if err := s.reg.useQueue(o.queue); err != nil {
		return fmt.Errorf("receiver %q of signal %q: %w", name, s.name, err)
	}
	var keyOf func(T) string
	if o.orderBy != nil {
		var ok bool
		if keyOf, ok = o.orderBy.(func(T) string); !ok {
			return fmt.Errorf("%w: receiver %q of signal %q: OrderBy's func is %T; the signal's payload needs a func(%v) string",
				ErrInvalidConfig, name, s.name, o.orderBy, reflect.TypeFor[T]())
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.receivers[name]; dup {
		return fmt.Errorf("%w: signal %q already has a receiver %q", ErrDuplicateName, s.name, name)
	}
	s.receivers[name] = &receiver[T]{fn: fn, opts: o}
	maxRetry := o.maxRetries
	if o.limits.Limited() {
		// asynq archives a task that is rescheduled on its last attempt,
		// even for a wait that is no failure: one retry of headroom lets a
		// limited receiver's last attempt wait too. The worker counts the
		// receiver's own MaxRetries (deliverer.admit).
		maxRetry++
	}
	s.targets = append(s.targets, store.Target{
		Receiver:  name,
		Queue:     o.queue,
		MaxRetry:  maxRetry,
		TimeoutMS: o.timeout.Milliseconds(),
	})
	s.keyOf = append(s.keyOf, keyOf)
	return nil
}

// receiverOptions returns the options the receiver named name was connected
// with, for the worker's retry delay.
func (s *Signal[T]) receiverOptions(name string) (receiverOptions, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	rc, ok := s.receivers[name]
	if !ok {
		return receiverOptions{}, false
	}
	return rc.opts, true
}

func (s *Signal[T]) receiverNames() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.targets))
	for _, t := range s.targets {
		out = append(out, t.Receiver)
	}
	return out
}

func (s *Signal[T]) queues() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.targets))
	for _, t := range s.targets {
		out = append(out, t.Queue)
	}
	return out
}
