package dashboard_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/dashboard"
	"github.com/dj-signals/signals/internal/ledgerview"
	"github.com/dj-signals/signals/internal/testenv"
)

func TestEvent(t *testing.T) {
	t.Parallel()
	b := setup(t, dashboard.Config{TraceURL: "https://traces.example/trace/{trace_id}"})
	placed := b.send(t, 1, "cascade")[0]
	testenv.Eventually(t, eventually, func() bool { return b.countDead(t) == 2 }, "the charge and the invoice's pdf die")
	testenv.Eventually(t, eventually, func() bool {
		e, err := ledgerview.New(b.ledger).Event(t.Context(), placed)
		return err == nil && e != nil && len(e.Deliveries) == 1
	}, "email's and invoice's successes acked (the Worker acks in batches)")
	pdf, err := b.ledger.DeadLetters(t.Context(), signals.DeadFilter{Receiver: "pdf"})
	require.NoError(t, err)
	require.Len(t, pdf, 1)
	invoice := pdf[0].EventID

	t.Run("the first event", func(t *testing.T) {
		status, page := b.get(t, "event?id="+placed.String())
		require.Equal(t, http.StatusOK, status, page)
		require.Contains(t, page, `<dd id="event-signal">order.placed</dd>`)
		require.Equal(t, 1, rowsOf(page, "deliveries"), "email and invoice are done, charge is dead: %s", page)
		require.Contains(t, page, "permanent: card declined")
		require.Contains(t, page, "it starts its cascade")
		require.Contains(t, page, `href="https://traces.example/trace/4bf92f3577b34da6a3ce929d0e0e4736"`)
		caused := page[strings.Index(page, `<ul id="caused">`):]
		require.Contains(t, caused[:strings.Index(caused, "</ul>")], invoice.String())
		require.Contains(t, page, `<ul class="tree" id="cascade">`)
	})

	t.Run("the event it caused, by a task ID", func(t *testing.T) {
		status, page := b.get(t, "event?id="+strings.ToLower(pdf[0].TaskID.String()))
		require.Equal(t, http.StatusOK, status, page)
		require.Contains(t, page, `<span class="mono" id="event-id">`+invoice.String())
		require.Contains(t, page, `<dd id="caused-by"><a class="mono" href="event?id=`+placed.String())
		require.Contains(t, page, `<span class="badge">this event</span>`)
		tree := page[strings.Index(page, `id="cascade"`):]
		require.Less(t, strings.Index(tree, placed.String()), strings.Index(tree, invoice.String()), "the cause comes first")
	})

	t.Run("a payload and an error text render inert", func(t *testing.T) {
		b.failure.Store(`<b onmouseover="alert(2)">declined</b>`)
		ids := b.send(t, 1, "<script>alert(1)</script>")
		testenv.Eventually(t, eventually, func() bool { return b.countDead(t) == 3 }, "the charge dies")
		status, page := b.get(t, "event?id="+ids[0].String())
		require.Equal(t, http.StatusOK, status, page)
		require.NotContains(t, page, "<script>alert")
		require.NotContains(t, page, "<b onmouseover")
		require.Contains(t, page, `&#34;note&#34;: &#34;&lt;script&gt;alert(1)&lt;/script&gt;&#34;`, "the payload reads as it was sent, escaped")
		require.Contains(t, page, `&lt;b onmouseover=&#34;alert(2)&#34;&gt;declined&lt;/b&gt;`)
	})
}

func TestEventNotFound(t *testing.T) {
	t.Parallel()
	b := setup(t, dashboard.Config{})
	status, page := b.get(t, "event?id=01HZZZZZZZZZZZZZZZZZZZZZZZ")
	require.Equal(t, http.StatusNotFound, status, page)
	require.Contains(t, page, "The ledger holds no row of this event")
	status, page = b.get(t, "event?id=%3Cscript%3E")
	require.Equal(t, http.StatusBadRequest, status, page)
	require.NotContains(t, page, "<script>", "the ID typed is escaped")
	status, page = b.get(t, "event")
	require.Equal(t, http.StatusOK, status, page)
	require.Contains(t, page, "Find an event")
}
