package dashboard

import (
	"bytes"
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"strings"

	"github.com/oklog/ulid/v2"

	"github.com/dj-signals/signals/internal/ledgerview"
)

// eventData is the event page's.
type eventData struct {
	// Query is the ID searched for, as typed.
	Query string
	// Event is the event found; nil when the ledger holds none of its rows.
	Event   *ledgerview.EventRecord
	Payload string // indented JSON
	Headers []header
	// Caused are the events in the ledger that the event's receivers sent.
	Caused []ledgerview.EventRecord
	// Cascade is the tree of the event's cascade, as far as the ledger
	// holds it, from its first event.
	Cascade *node
}

// header is one of an event's headers, with a trace link for a traceparent.
type header struct {
	Name, Value, TraceLink string
}

// node is one event of a cascade's tree. Event is nil for an event that is
// done (gone from the ledger) but whose successors are still there.
type node struct {
	ID       ulid.ULID
	Event    *ledgerview.EventRecord
	Current  bool // the page's event
	Children []*node
}

// event shows one event, found by its ID or a delivery's, and its cascade.
func (h *handler) event(w http.ResponseWriter, r *http.Request) {
	d := eventData{Query: strings.TrimSpace(r.URL.Query().Get("id"))}
	if d.Query == "" {
		h.render(w, r, "event", http.StatusOK, page{Title: "Event", Nav: "event", Data: d})
		return
	}
	id, err := ulid.ParseStrict(strings.ToUpper(d.Query))
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, "read the ID "+d.Query+" (an event ID or a task ID: 26 characters, as the logs and signals dead list print them)", err)
		return
	}
	d.Event, err = h.view.Event(r.Context(), id)
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "read the event", err)
		return
	}
	// An event that is done may still have started a cascade whose later
	// events are in the ledger: the ID is then their correlation ID.
	correlation := id
	if d.Event != nil {
		correlation = d.Event.CorrelationID
		d.Payload = indent(d.Event.Payload)
		if d.Event.Encoded {
			d.Payload = "encoded (by the application's RegistryConfig.Codec, which this dashboard's registry does not have)"
		}
		d.Headers = h.headers(d.Event.Headers)
	}
	cascade, err := h.view.Cascade(r.Context(), correlation)
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "read the event's cascade", err)
		return
	}
	if d.Event != nil {
		for _, e := range cascade {
			if e.CausationID == d.Event.ID {
				d.Caused = append(d.Caused, e)
			}
		}
	}
	if d.Event != nil {
		d.Cascade = tree(correlation, cascade, d.Event.ID)
	} else if len(cascade) > 0 {
		d.Cascade = tree(correlation, cascade, id)
	}
	status := http.StatusOK
	if d.Event == nil {
		status = http.StatusNotFound
	}
	h.render(w, r, "event", status, page{Title: "Event " + d.Query, Nav: "event", Data: d})
}

// indent is a JSON payload indented, as it is if it is not JSON, with the
// escapes encoding/json writes for <, > and & turned back into the
// characters, for a human to read: the template escapes them for HTML.
func indent(payload json.RawMessage) string {
	var buf bytes.Buffer
	if err := json.Indent(&buf, payload, "", "  "); err != nil {
		return string(payload)
	}
	s := buf.String()
	var out strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 >= len(s) {
			out.WriteByte(s[i])
			continue
		}
		if s[i+1] == 'u' && i+6 <= len(s) {
			if c, ok := htmlEscapes[s[i+2:i+6]]; ok {
				out.WriteByte(c)
				i += 5
				continue
			}
		}
		out.WriteString(s[i : i+2]) // an escape other than those, such as \\
		i++
	}
	return out.String()
}

// htmlEscapes are the characters encoding/json escapes in strings by
// default, by their hex codes.
var htmlEscapes = map[string]byte{"003c": '<', "003e": '>', "0026": '&'}

// traceParent reads a W3C traceparent: version-traceid-parentid-flags.
var traceParent = regexp.MustCompile(`^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$`)

// headers lists hs sorted by name, with a trace link for a traceparent
// when a TraceURL is configured.
func (h *handler) headers(hs map[string]string) []header {
	out := make([]header, 0, len(hs))
	for name, value := range hs {
		hd := header{Name: name, Value: value}
		if m := traceParent.FindStringSubmatch(value); name == "traceparent" && m != nil && h.cfg.TraceURL != "" {
			hd.TraceLink = strings.ReplaceAll(h.cfg.TraceURL, "{trace_id}", m[1])
		}
		out = append(out, hd)
	}
	slices.SortFunc(out, func(a, b header) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// tree arranges a cascade's events, sorted by ID, under its first event,
// root; an event whose cause is gone from the ledger hangs under a node of
// its own that says so.
func tree(root ulid.ULID, events []ledgerview.EventRecord, current ulid.ULID) *node {
	nodes := map[ulid.ULID]*node{root: {ID: root}}
	get := func(id ulid.ULID) *node {
		n, ok := nodes[id]
		if !ok {
			n = &node{ID: id}
			nodes[id] = n
		}
		return n
	}
	for i := range events {
		e := &events[i]
		n := get(e.ID)
		n.Event = e
		n.Current = e.ID == current
	}
	// Children in ID order (the order events are in); a cause missing from
	// the ledger is attached under the root, since its own cause is unknown.
	for i := range events {
		e := &events[i]
		if e.ID == root {
			continue
		}
		parent := root
		if e.CausationID != (ulid.ULID{}) {
			parent = e.CausationID
		}
		p := get(parent)
		if p.Event == nil && parent != root && !slices.ContainsFunc(nodes[root].Children, func(c *node) bool { return c == p }) {
			nodes[root].Children = append(nodes[root].Children, p)
		}
		p.Children = append(p.Children, nodes[e.ID])
	}
	nodes[root].Current = nodes[root].Current || root == current
	return nodes[root]
}
