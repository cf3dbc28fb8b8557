// Package wake lets a sender hint relays in the same process that new outbox
// rows are on their way, so they look sooner than their next poll. A hint
// costs the sender one non-blocking channel send per local relay and no
// database work; relays in other processes rely on polling.
package wake

import (
	"sync"
	"sync/atomic"
)

var (
	mu    sync.RWMutex
	subs  = map[string]map[chan struct{}]struct{}{}
	keyed sync.Map // schema → *atomic.Uint64: sends of rows with an ordering key
)

// Subscribe returns a channel that receives a value after Notify(schema),
// coalescing hints that arrive while one is pending, and a func that ends the
// subscription.
func Subscribe(schema string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	mu.Lock()
	if subs[schema] == nil {
		subs[schema] = map[chan struct{}]struct{}{}
	}
	subs[schema][ch] = struct{}{}
	mu.Unlock()
	return ch, func() {
		mu.Lock()
		delete(subs[schema], ch)
		if len(subs[schema]) == 0 {
			delete(subs, schema)
		}
		mu.Unlock()
	}
}

// Notify hints every subscriber of schema; it never blocks.
func Notify(schema string) {
	mu.RLock()
	for ch := range subs[schema] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	mu.RUnlock()
}

// NotifyKeyed is Notify for a send whose rows have ordering keys: relays in
// this process, which look for keyed rows only while there are some, see
// [KeyedSends] change and look again.
func NotifyKeyed(schema string) {
	n, _ := keyed.LoadOrStore(schema, new(atomic.Uint64))
	n.(*atomic.Uint64).Add(1)
	Notify(schema)
}

// KeyedSends counts the NotifyKeyed calls for schema so far.
func KeyedSends(schema string) uint64 {
	if n, ok := keyed.Load(schema); ok {
		return n.(*atomic.Uint64).Load()
	}
	return 0
}
