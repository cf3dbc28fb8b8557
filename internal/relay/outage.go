package relay

import (
	"log/slog"
	"time"

	"github.com/dj-signals/signals/internal/store"
)

// summaryEvery is how often a relay that keeps failing says so again.
const summaryEvery = time.Minute

// outageLog reports a stretch of failed batches as a person wants to read
// it: a line when it starts (with the fix, when the fix is known), a summary
// every summaryEvery while it lasts, a line when it ends. Each failure is
// logged too, at Debug.
type outageLog struct {
	logger   *slog.Logger
	schema   string
	failures int
	began    time.Time
	said     time.Time // when the last Warn or Error went out
}

// failed records the failures-th failed batch in a row.
func (o *outageLog) failed(err error, retryIn time.Duration) {
	o.failures++
	o.logger.Debug("signals: dispatcher batch failed; backing off", "error", err, "failures", o.failures, "retry_in", retryIn)
	now := time.Now()
	switch {
	case o.failures == 1 && store.TablesMissing(err):
		o.began, o.said = now, now
		o.logger.Error("signals: the outbox tables are missing: run Registry.Migrate (or apply signals.Migrations) for this schema; the Dispatcher waits until they exist",
			"schema", o.schema, "error", err)
	case o.failures == 1:
		o.began, o.said = now, now
		o.logger.Warn("signals: dispatcher cannot move rows; backing off until it can", "error", err, "retry_in", retryIn)
	case now.Sub(o.said) >= summaryEvery:
		o.said = now
		o.logger.Warn("signals: dispatcher still failing", "for", now.Sub(o.began).Round(time.Second), "failures", o.failures, "error", err)
	}
}

// recovered ends a stretch of failures, if one was under way.
func (o *outageLog) recovered() {
	if o.failures == 0 {
		return
	}
	o.logger.Info("signals: dispatcher recovered", "after", time.Since(o.began).Round(time.Millisecond), "failures", o.failures)
	o.failures = 0
}
