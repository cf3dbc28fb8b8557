package dashboard

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/health"
)

// reasons are the dead letters' reasons, for the filter's choices.
var reasons = []signals.DeadReason{
	signals.ReasonRetriesExhausted, signals.ReasonPermanent, signals.ReasonUnenqueueable, signals.ReasonUndecodable,
	signals.ReasonUnknownReceiver, signals.ReasonCascadeTooDeep, signals.ReasonArchived,
}

// deadQuery is the dead letters page's filter as its form and links carry
// it: names and texts as typed, ages as durations (30m, 24h).
type deadQuery struct {
	Signal, Receiver, Reason, Error string
	OlderThan, NewerThan            string
}

func readDeadQuery(form url.Values) deadQuery {
	get := func(k string) string { return strings.TrimSpace(form.Get(k)) }
	return deadQuery{
		Signal: get("signal"), Receiver: get("receiver"), Reason: get("reason"), Error: get("error"),
		OlderThan: get("older_than"), NewerThan: get("newer_than"),
	}
}

// values is q as a query string's values, without the empty ones.
func (q deadQuery) values() url.Values {
	v := url.Values{}
	for k, s := range map[string]string{"signal": q.Signal, "receiver": q.Receiver, "reason": q.Reason, "error": q.Error, "older_than": q.OlderThan, "newer_than": q.NewerThan} {
		if s != "" {
			v.Set(k, s)
		}
	}
	return v
}

// Fields are q's non-empty fields by form name, for hidden inputs.
func (q deadQuery) Fields() map[string]string {
	out := map[string]string{}
	for k, v := range q.values() {
		out[k] = v[0]
	}
	return out
}

// Link is the dead letters page of q.
func (q deadQuery) Link() string { return link(q.values()) }

// link is the dead letters page with the query v.
func link(v url.Values) string {
	if len(v) == 0 {
		return "dead"
	}
	return "dead?" + v.Encode()
}

// Any reports whether q narrows the selection.
func (q deadQuery) Any() bool { return len(q.values()) > 0 }

// filter is q as the ledger's filter, as of now.
func (q deadQuery) filter(now time.Time) (signals.DeadFilter, error) {
	f := signals.DeadFilter{Signal: q.Signal, Receiver: q.Receiver, ErrorContains: q.Error, Reason: signals.DeadReason(q.Reason)}
	if q.Reason != "" && !isReason(f.Reason) {
		return f, fmt.Errorf("reason %q is none of the dead letters' reasons", q.Reason)
	}
	if q.OlderThan != "" {
		d, err := time.ParseDuration(q.OlderThan)
		if err != nil || d < 0 {
			return f, fmt.Errorf("dead for at least %q: want a duration such as 30m or 24h", q.OlderThan)
		}
		f.Until = now.Add(-d)
	}
	if q.NewerThan != "" {
		d, err := time.ParseDuration(q.NewerThan)
		if err != nil || d <= 0 {
			return f, fmt.Errorf("dead for at most %q: want a duration such as 30m or 24h", q.NewerThan)
		}
		f.Since = now.Add(-d)
	}
	return f, nil
}

func isReason(r signals.DeadReason) bool {
	for _, known := range reasons {
		if r == known {
			return true
		}
	}
	return false
}

// deadData is the dead letters page's.
type deadData struct {
	Query   deadQuery
	Reasons []signals.DeadReason
	Letters []signals.DeadLetter
	// Matching counts the letters that match, on every page.
	Matching int
	// First says this is the first page; Next, when set, links the next.
	First bool
	Next  string
	// Done, when set, is the result of the action just taken.
	Done string
}

// deadLetters lists the dead letters the query selects, a page at a time.
func (h *handler) deadLetters(w http.ResponseWriter, r *http.Request) {
	q := readDeadQuery(r.URL.Query())
	f, err := q.filter(time.Now())
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, "read the filter", err)
		return
	}
	f.After = r.URL.Query().Get("after")
	first := f.After == ""
	// One more than a page tells whether there is a next.
	f.Limit = h.cfg.PageSize + 1
	letters, err := h.ledger.DeadLetters(r.Context(), f)
	if errors.Is(err, signals.ErrInvalidConfig) {
		h.fail(w, r, http.StatusBadRequest, "read the page's cursor", err)
		return
	}
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "list the dead letters", err)
		return
	}
	more := len(letters) > h.cfg.PageSize
	letters = letters[:min(len(letters), h.cfg.PageSize)]
	f.After = ""
	matching, err := h.view.CountDead(r.Context(), f)
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "count the dead letters", err)
		return
	}
	d := deadData{Query: q, Reasons: reasons, Letters: letters, Matching: matching, First: first}
	if more {
		next := q.values()
		next.Set("after", letters[len(letters)-1].Cursor())
		d.Next = link(next)
	}
	if n, err := strconv.Atoi(r.URL.Query().Get("n")); err == nil {
		switch r.URL.Query().Get("done") {
		case "requeue":
			d.Done = "Requeued " + health.Count(n, "dead letter") + ": each is pending again, for a Dispatcher to enqueue."
		case "discard":
			d.Done = "Discarded " + health.Count(n, "dead letter") + "."
		}
	}
	h.render(w, r, "dead", http.StatusOK, page{Title: "Dead letters", Nav: "dead", Data: d})
}

// deadAction is a requeue or discard as its forms carry it: on the letters
// selected by ID, or on all that match the query, dead no later than AsOf
// (when the confirmation counted them).
type deadAction struct {
	Action string // requeue or discard
	All    bool
	IDs    []ulid.ULID
	Query  deadQuery
	AsOf   time.Time
}

// readDeadAction reads and checks the action's form: its token, and that
// the handler is not read-only.
func (h *handler) readDeadAction(r *http.Request) (deadAction, int, error) {
	if err := r.ParseForm(); err != nil {
		return deadAction{}, http.StatusBadRequest, err
	}
	if h.cfg.ReadOnly {
		return deadAction{}, http.StatusForbidden, errors.New("this dashboard is read-only")
	}
	if err := h.csrf.check(r); err != nil {
		return deadAction{}, http.StatusForbidden, err
	}
	a := deadAction{Action: r.PostForm.Get("action"), All: r.PostForm.Get("scope") == "all", Query: readDeadQuery(r.PostForm)}
	if a.Action != "requeue" && a.Action != "discard" {
		return a, http.StatusBadRequest, fmt.Errorf("unknown action %q: want requeue or discard", a.Action)
	}
	ids := r.PostForm["id"]
	if len(ids) > maxPageSize {
		return a, http.StatusBadRequest, fmt.Errorf("%d letters selected by ID: at most %d; select all that match instead", len(ids), maxPageSize)
	}
	for _, s := range ids {
		id, err := ulid.ParseStrict(s)
		if err != nil {
			return a, http.StatusBadRequest, fmt.Errorf("dead letter ID %q: %v", s, err)
		}
		a.IDs = append(a.IDs, id)
	}
	if !a.All && len(a.IDs) == 0 {
		return a, http.StatusBadRequest, errors.New("no dead letter selected: tick some, or all that match")
	}
	if s := r.PostForm.Get("as_of"); s != "" {
		us, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return a, http.StatusBadRequest, fmt.Errorf("as_of %q: want microseconds since the epoch", s)
		}
		a.AsOf = time.UnixMicro(us)
	}
	return a, 0, nil
}

// filter is the ledger's filter of the letters a selects.
func (a deadAction) filter() (signals.DeadFilter, error) {
	if !a.All {
		return signals.DeadFilter{TaskIDs: a.IDs}, nil
	}
	f, err := a.Query.filter(a.AsOf)
	if err != nil {
		return f, err
	}
	// Letters that die after the confirmation are not among those counted.
	if f.Until.IsZero() || f.Until.After(a.AsOf) {
		f.Until = a.AsOf.Add(time.Microsecond)
	}
	return f, nil
}

// confirmData is the confirmation page's.
type confirmData struct {
	deadAction
	Count int
	AsOf  int64 // microseconds since the epoch
}

// AsOfTime is when the confirmation counted the letters.
func (c confirmData) AsOfTime() time.Time { return c.deadAction.AsOf }

// confirmDead states what an action will do, and how many letters it
// touches, before it is taken.
func (h *handler) confirmDead(w http.ResponseWriter, r *http.Request) {
	a, status, err := h.readDeadAction(r)
	if err != nil {
		h.fail(w, r, status, "prepare the action", err)
		return
	}
	a.AsOf = time.Now()
	f, err := a.filter()
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, "read the filter", err)
		return
	}
	n, err := h.view.CountDead(r.Context(), f)
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "count the dead letters", err)
		return
	}
	h.render(w, r, "confirm", http.StatusOK, page{Title: "Confirm", Nav: "dead", Data: confirmData{deadAction: a, Count: n, AsOf: a.AsOf.UnixMicro()}})
}

// actOnDead requeues or discards the letters a confirmed action selects,
// maxPageSize at a time, then shows the dead letters page with the result.
func (h *handler) actOnDead(w http.ResponseWriter, r *http.Request) {
	a, status, err := h.readDeadAction(r)
	if err == nil && a.All && a.AsOf.IsZero() {
		status, err = http.StatusBadRequest, errors.New("an action on all that match needs its confirmation's time (as_of)")
	}
	if err != nil {
		h.fail(w, r, status, "take the action", err)
		return
	}
	f, err := a.filter()
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, "read the filter", err)
		return
	}
	act := h.ledger.RequeueDead
	if a.Action == "discard" {
		act = h.ledger.DiscardDead
	}
	total := 0
	f.Limit = maxPageSize
	for {
		letters, err := h.ledger.DeadLetters(r.Context(), f)
		if err == nil && len(letters) > 0 {
			ids := make([]ulid.ULID, len(letters))
			for i, l := range letters {
				ids[i] = l.TaskID
			}
			var n int
			n, err = act(r.Context(), ids...)
			total += n
			f.After = letters[len(letters)-1].Cursor()
		}
		if err != nil {
			h.cfg.Logger.ErrorContext(r.Context(), "dashboard: dead letters "+a.Action, "done", total, "error", err)
			h.fail(w, r, http.StatusInternalServerError, fmt.Sprintf("%s the dead letters (%s done before the error)", a.Action, health.Count(total, "letter")), err)
			return
		}
		if len(letters) < f.Limit {
			break
		}
	}
	h.cfg.Logger.InfoContext(r.Context(), "dashboard: dead letters "+a.Action, "count", total)
	back := a.Query.values()
	back.Set("done", a.Action)
	back.Set("n", strconv.Itoa(total))
	// Relative, so that it works under any prefix the handler is mounted at.
	w.Header().Set("Location", "dead?"+back.Encode())
	w.WriteHeader(http.StatusSeeOther)
}
