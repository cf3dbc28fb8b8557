package dashboard

import (
	"net/http"
	"time"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/health"
)

// overviewData is the overview page's.
type overviewData struct {
	Stats signals.Stats
	// StatsError is why the snapshot is partial (Redis unreachable, say).
	StatsError string
	// Counting says no snapshot is ready yet; Stale that a newer one than
	// Stats is being computed.
	Counting, Stale bool
	Problems        []health.Problem // under health.Defaults, as signals status
	Totals          signals.ReceiverStats
}

// overview shows the ledger per receiver and queue, and its problems.
func (h *handler) overview(w http.ResponseWriter, r *http.Request) {
	refresh := 0
	if h.cfg.Refresh > 0 {
		refresh = max(int(h.cfg.Refresh.Round(time.Second)/time.Second), 1)
	}
	snap, stale := h.snapshots.get(r.Context())
	if snap == nil {
		// The first snapshot is still being computed: the page says so and
		// comes back for it.
		h.render(w, r, "overview", http.StatusOK, page{Title: "Overview", Nav: "overview", Refresh: 1, Data: overviewData{Counting: true}})
		return
	}
	// An error leaves the figures Stats could read: without Redis it still
	// counts the ledger. The page shows both.
	d := overviewData{Stats: snap.stats, Problems: health.Problems(snap.stats, health.Defaults), Stale: stale}
	if snap.err != nil {
		d.StatsError = snap.err.Error()
	}
	for _, rs := range snap.stats.Receivers {
		d.Totals.Pending += rs.Pending
		d.Totals.InFlight += rs.InFlight
		d.Totals.Dead += rs.Dead
		d.Totals.HeldKeys += rs.HeldKeys
	}
	if stale {
		refresh = 1
	}
	h.render(w, r, "overview", http.StatusOK, page{Title: "Overview", Nav: "overview", Refresh: refresh, Data: d})
}
