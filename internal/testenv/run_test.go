package testenv

import (
	"context"
	"errors"
	"testing"
)

func TestRunStopsEachComponentAtTheTestsEnd(t *testing.T) {
	t.Parallel()
	stopped := make(chan struct{}, 2)
	t.Run("inner", func(t *testing.T) {
		wait := func(ctx context.Context) error {
			<-ctx.Done()
			stopped <- struct{}{}
			return nil
		}
		Run(t, wait, wait)
	})
	if len(stopped) != 2 {
		t.Fatalf("%d of 2 components stopped when the test ended", len(stopped))
	}
}

func TestRunReportsAComponentsError(t *testing.T) {
	t.Parallel()
	rec := &recorder{TB: t}
	Run(rec, func(context.Context) error { return errors.New("boom") })
	rec.cleanup()
	if !rec.failed {
		t.Fatal("an error from a component failed nothing")
	}
}

// recorder is a testing.TB whose cleanups and failures the test reads.
type recorder struct {
	testing.TB
	cleanups []func()
	failed   bool
}

func (r *recorder) Helper()               {}
func (r *recorder) Cleanup(f func())      { r.cleanups = append(r.cleanups, f) }
func (r *recorder) Errorf(string, ...any) { r.failed = true }
func (r *recorder) cleanup() {
	for _, f := range r.cleanups {
		f()
	}
}
