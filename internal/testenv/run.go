package testenv

import (
	"context"
	"testing"
	"time"
)

// runStopTimeout bounds how long Run waits, at the test's end, for a
// component to return after its ctx ends.
const runStopTimeout = 30 * time.Second

// Run runs each component (a Dispatcher's or a Worker's Run, say) in a
// goroutine until the test ends, then cancels their ctx and fails the test
// unless each returns nil within 30 s.
func Run(t testing.TB, components ...func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, len(components))
	for _, c := range components {
		go func() { done <- c(ctx) }()
	}
	t.Cleanup(func() {
		cancel()
		deadline := time.After(runStopTimeout)
		for range components {
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("a component returned %v after its ctx ended; want nil", err)
				}
			case <-deadline:
				t.Errorf("a component did not return within %v of its ctx's end", runStopTimeout)
				return
			}
		}
	})
}
