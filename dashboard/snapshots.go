package dashboard

import (
	"context"
	"sync"
	"time"

	"github.com/dj-signals/signals"
)

// snapshotTimeout bounds one computation of the overview's snapshot.
const snapshotTimeout = time.Minute

// snapshotWait is how long the overview waits for a snapshot being
// computed before it shows the one before, or none: Ledger.Stats reads the
// whole outbox, which takes seconds on a ledger of millions of rows.
const snapshotWait = 750 * time.Millisecond

// snapshot is one Ledger.Stats, with its error.
type snapshot struct {
	stats signals.Stats
	err   error
}

// snapshots computes the overview's Ledger.Stats one at a time, whatever
// the number of browsers showing it, and keeps the latest: Stats reads the
// whole outbox, which costs the application's database a pass over it, so
// pages that reload themselves share the snapshot while it is younger than
// maxAge. A computation runs in a goroutine of its own, so that a page can
// answer without waiting for it; it ends within snapshotTimeout.
type snapshots struct {
	ledger *signals.Ledger
	maxAge time.Duration // negative: always compute a new one, and wait for it

	mu      sync.Mutex
	last    *snapshot
	running chan struct{} // closed when the computation running ends; nil when none runs
}

// get returns a snapshot younger than maxAge, computing one if needed and
// waiting for it at most snapshotWait (with a negative maxAge, as long as
// ctx allows). When no such snapshot is ready by then, it returns the last
// one, older, or nil if there is none yet; stale says so.
func (s *snapshots) get(ctx context.Context) (last *snapshot, stale bool) {
	s.mu.Lock()
	if s.fresh() {
		defer s.mu.Unlock()
		return s.last, false
	}
	if s.running == nil {
		s.running = make(chan struct{})
		go s.compute(s.running)
	}
	running := s.running
	s.mu.Unlock()

	var timeout <-chan time.Time
	if s.maxAge >= 0 {
		timer := time.NewTimer(snapshotWait)
		defer timer.Stop()
		timeout = timer.C
	}
	select {
	case <-running:
	case <-timeout:
	case <-ctx.Done():
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last, s.last == nil || !s.fresh() && s.running != nil
}

// fresh reports whether the last snapshot may be shown as it is; s.mu is
// held.
func (s *snapshots) fresh() bool {
	return s.last != nil && s.maxAge >= 0 && time.Since(s.last.stats.At) <= s.maxAge
}

// compute takes a snapshot, keeps it, and closes done.
func (s *snapshots) compute(done chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), snapshotTimeout)
	defer cancel()
	st, err := s.ledger.Stats(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last = &snapshot{stats: st, err: err}
	s.running = nil
	close(done)
}
