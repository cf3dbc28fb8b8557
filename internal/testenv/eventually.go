package testenv

import (
	"testing"
	"time"
)

// pollTick is short because what tests here wait for, a local process or
// connection, is usually ready within milliseconds.
const pollTick = 5 * time.Millisecond

// Eventually calls cond every 5 ms until it returns true, and fails the test
// with the formatted message if it has not done so within timeout. cond is
// always called at least once.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	if !poll(timeout, cond) {
		t.Fatalf(format, args...)
	}
}

// poll is Eventually for callers that report failure as an error: it reports
// whether cond returned true within timeout.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(pollTick)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
	return true
}

// awaitReady polls ready until it returns nil, the process whose exit
// closes exited is gone, or timeout passes. It reports whether the process
// exited first, and returns ready's last error (nil: ready).
func awaitReady(timeout time.Duration, exited <-chan struct{}, ready func() error) (exitedEarly bool, err error) {
	poll(timeout, func() bool {
		if err = ready(); err == nil {
			return true
		}
		select {
		case <-exited:
			exitedEarly = true
			return true
		default:
			return false
		}
	})
	return exitedEarly, err
}
