// Package wake lets a sender hint relays in the same process that new outbox
// rows are on their way, so they look sooner than their next poll. A hint
// costs the sender one non-blocking channel send per local relay and no
// database work; relays in other processes rely on polling.
package wake

import "sync"

var (
	mu   sync.RWMutex
	subs = map[string]map[chan struct{}]struct{}{}
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
