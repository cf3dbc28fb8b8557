package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/health"
)

// Without --limit, list shows a screenful; requeue and discard take a
// larger batch per run, and say when more may match.
const (
	deadListLimit = 100
	deadActLimit  = 1000
)

func deadCommand(ctx context.Context, args []string, stdout, _ io.Writer) error {
	if len(args) == 0 {
		return usagef("name a subcommand: list, show, requeue or discard")
	}
	var err error
	switch args[0] {
	case "list":
		err = deadList(ctx, args[1:], stdout)
	case "show":
		err = deadShow(ctx, args[1:], stdout)
	case "requeue", "discard":
		err = deadAct(ctx, args[0], args[1:], stdout)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, "Usage:\n\n\tsignals dead list [FILTERS] [--limit N] [--json]\n\tsignals dead show [--json] ID|EVENT_ID\n\tsignals dead requeue|discard ID...\n\tsignals dead requeue|discard FILTERS|--all [--limit N] [--yes]\n\nRun 'signals dead SUBCOMMAND -h' for its flags.\n")
		return nil
	default:
		hint := didYouMean(suggest(args[0], []string{"discard", "list", "requeue", "show"}))
		return usagef("unknown subcommand %q%s", args[0], cmp.Or(hint, ": use list, show, requeue or discard"))
	}
	// A mistake in a subcommand's line is explained by its own help.
	var usageErr usageError
	if errors.As(err, &usageErr) && usageErr.command == "" {
		usageErr.command = "dead " + args[0]
		return usageErr
	}
	return err
}

// deadFilters are the flags that select dead letters.
type deadFilters struct {
	signal, receiver, errorText string
	olderThan                   time.Duration
	since                       string
	limit                       int
}

func (f *deadFilters) addFlags(fs *flagSet, defaultLimit int) {
	fs.StringVar(&f.signal, "signal", "", "only dead letters of the signal `NAME`")
	fs.StringVar(&f.receiver, "receiver", "", "only dead letters of the receiver `NAME`")
	fs.durationVar(&f.olderThan, "older-than", 0, "only letters dead for at least `D` (30m, 24h)")
	fs.StringVar(&f.since, "since", "", "only letters dead at or after `WHEN`: an RFC 3339 time, or a duration ago (2h)")
	fs.StringVar(&f.errorText, "error", "", "only letters whose error contains `TEXT`, ignoring case")
	fs.intVar(&f.limit, "limit", defaultLimit, "at most `N` letters, the longest dead first")
}

// any reports whether a filter narrows the selection.
func (f *deadFilters) any() bool {
	return f.signal != "" || f.receiver != "" || f.errorText != "" || f.olderThan != 0 || f.since != ""
}

// filter turns the flags into a DeadFilter as of now.
func (f *deadFilters) filter(now time.Time) (signals.DeadFilter, error) {
	if f.limit <= 0 {
		return signals.DeadFilter{}, usagef("--limit must be positive, such as %d", deadListLimit)
	}
	if f.olderThan < 0 {
		return signals.DeadFilter{}, usagef("--older-than must not be negative")
	}
	df := signals.DeadFilter{Signal: f.signal, Receiver: f.receiver, ErrorContains: f.errorText, Limit: f.limit}
	if f.olderThan > 0 {
		df.Until = now.Add(-f.olderThan)
	}
	if f.since != "" {
		if d, err := time.ParseDuration(f.since); err == nil {
			df.Since = now.Add(-d)
		} else if t, err := time.Parse(time.RFC3339, f.since); err == nil {
			df.Since = t
		} else {
			return signals.DeadFilter{}, usagef("--since %q is neither an RFC 3339 time (2025-06-01T12:00:00Z) nor a duration (2h)", f.since)
		}
	}
	return df, nil
}

func deadList(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("dead list", "signals dead list [FILTERS] [--limit N] [--json] [connection flags]", stdout)
	var c connection
	c.addFlags(fs)
	var f deadFilters
	f.addFlags(fs, deadListLimit)
	asJSON := fs.Bool("json", false, "print JSON, one array of letters with their payloads")
	args, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(args) > 0 {
		return usagef("unexpected argument %q: dead list takes filters, such as --signal NAME", args[0])
	}
	df, err := f.filter(time.Now())
	if err != nil {
		return err
	}
	letters, err := readDead(ctx, &c, df)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, deadJSONs(letters))
	}
	if len(letters) == 0 {
		_, err := fmt.Fprintln(stdout, "no dead letters match")
		return err
	}
	if err := printDeadTable(stdout, letters, time.Now()); err != nil {
		return err
	}
	if len(letters) == df.Limit {
		fmt.Fprintf(stdout, "\nthe first %d shown; more may match: raise --limit or narrow the filters\n", df.Limit)
	}
	return nil
}

// deadShow shows the dead letter whose ID it is given, or the dead letters
// of the event whose ID it is given: the quick start and the logs print an
// event's ID first.
func deadShow(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("dead show", "signals dead show [--json] ID|EVENT_ID [connection flags]", stdout)
	var c connection
	c.addFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON: the letter, or an event's letters as an array, as dead list prints them")
	args, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(args) != 1 {
		return usagef("dead show takes one ID: a dead letter's, as dead list prints it, or an event's")
	}
	ids, err := parseIDs(args)
	if err != nil {
		return err
	}
	id := ids[0]
	s, err := c.open(ctx, false)
	if err != nil {
		return err
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	letters, err := s.ledger.DeadLetters(ctx, signals.DeadFilter{TaskIDs: ids, Limit: 1})
	if err != nil {
		return s.explain(err)
	}
	if len(letters) == 1 {
		if *asJSON {
			return printJSON(stdout, deadJSONs(letters)[0])
		}
		return printDeadLetter(stdout, letters[0], time.Now())
	}
	// An event has a letter per receiver at most; the limit only bounds
	// the read.
	letters, err = s.ledger.DeadLetters(ctx, signals.DeadFilter{EventIDs: ids, Limit: deadListLimit})
	if err != nil {
		return s.explain(err)
	}
	if len(letters) == 0 {
		return fmt.Errorf("no dead letter in schema %s has %s as its ID or as its event's ID (requeued, discarded, delivered, or mistyped?)", c.schema, id)
	}
	if *asJSON {
		return printJSON(stdout, deadJSONs(letters))
	}
	fmt.Fprintf(stdout, "event %s: %s\n", id, health.Count(len(letters), "dead letter"))
	for _, l := range letters {
		fmt.Fprintln(stdout)
		if err := printDeadLetter(stdout, l, time.Now()); err != nil {
			return err
		}
	}
	return nil
}

// deadAct requeues or discards the letters named by ID, or selected by
// filters. A selection by filters is only shown unless --yes: a typo in a
// filter costs nothing, and no prompt ever waits on a terminal, so the
// same command line works in a script once checked by hand. Every letter
// at once needs --all; IDs are explicit enough to act on at once.
func deadAct(ctx context.Context, verb string, args []string, stdout io.Writer) error {
	fs := newFlagSet("dead "+verb, "signals dead "+verb+" ID... | FILTERS|--all [--limit N] [--yes] [connection flags]", stdout)
	var c connection
	c.addFlags(fs)
	var f deadFilters
	f.addFlags(fs, deadActLimit)
	all := fs.Bool("all", false, "select every dead letter (up to --limit)")
	yes := fs.Bool("yes", false, "act on the letters the filters or --all select; without it, only show them")
	args, err := fs.parse(args)
	if err != nil {
		return err
	}
	var ids []ulid.ULID
	switch {
	case len(args) > 0 && (f.any() || *all):
		return usagef("give IDs or filters, not both")
	case len(args) > 0:
		if ids, err = parseIDs(args); err != nil {
			return err
		}
	case !f.any() && !*all:
		return usagef("name the dead letters: IDs, filters (--signal, --receiver, --older-than, --since, --error), or --all for every one")
	case f.any() && *all:
		return usagef("--all selects every dead letter: drop it, or drop the filters")
	}

	s, err := c.open(ctx, false)
	if err != nil {
		return err
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	act := s.ledger.RequeueDead
	if verb == "discard" {
		act = s.ledger.DiscardDead
	}
	past := map[string]string{"requeue": "requeued", "discard": "discarded"}[verb]

	if ids != nil {
		n, err := act(ctx, ids...)
		if err != nil {
			return s.explain(err)
		}
		fmt.Fprintf(stdout, "%s %s\n", past, health.Count(n, "dead letter"))
		if n < len(ids) {
			return fmt.Errorf("%d of the %d IDs are not dead letters' IDs in schema %s (%s or discarded already, or mistyped; an event's letters have IDs of their own: see signals dead show EVENT_ID)",
				len(ids)-n, len(ids), c.schema, past)
		}
		return nil
	}

	df, err := f.filter(time.Now())
	if err != nil {
		return err
	}
	letters, err := s.ledger.DeadLetters(ctx, df)
	if err != nil {
		return s.explain(err)
	}
	if len(letters) == 0 {
		_, err := fmt.Fprintln(stdout, "no dead letters match")
		return err
	}
	if !*yes {
		fmt.Fprintf(stdout, "would %s %s:\n\n", verb, health.Count(len(letters), "dead letter"))
		if err := printDeadSummary(stdout, letters); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "\nrun again with --yes to %s them (signals dead list, with the same filters, shows each)\n", verb)
		return nil
	}
	ids = make([]ulid.ULID, len(letters))
	for i, l := range letters {
		ids[i] = l.TaskID
	}
	n, err := act(ctx, ids...)
	if err != nil {
		return s.explain(err)
	}
	fmt.Fprintf(stdout, "%s %s\n", past, health.Count(n, "dead letter"))
	if len(letters) == df.Limit {
		fmt.Fprintf(stdout, "more may match: run again (at most --limit %d per run)\n", df.Limit)
	}
	return nil
}

// readDead connects and lists the letters df selects.
func readDead(ctx context.Context, c *connection, df signals.DeadFilter) ([]signals.DeadLetter, error) {
	s, err := c.open(ctx, false)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	letters, err := s.ledger.DeadLetters(ctx, df)
	return letters, s.explain(err)
}

func parseIDs(args []string) ([]ulid.ULID, error) {
	ids := make([]ulid.ULID, len(args))
	for i, a := range args {
		id, err := ulid.ParseStrict(a)
		if err != nil {
			return nil, usagef("%q is not an ID (a ULID, such as 01ARZ3NDEKTSV4RRFFQ69G5FAV, as dead list prints it)", a)
		}
		ids[i] = id
	}
	return ids, nil
}

func printDeadTable(w io.Writer, letters []signals.DeadLetter, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSIGNAL\tRECEIVER\tREASON\tATTEMPTS\tDEAD FOR\tERROR")
	for _, l := range letters {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", l.TaskID, l.Signal, l.Receiver, l.Reason, l.Attempts, health.Age(now.Sub(l.DeadAt)), oneLine(l.Error, 60))
	}
	return tw.Flush()
}

// printDeadSummary counts letters per signal, receiver and reason.
func printDeadSummary(w io.Writer, letters []signals.DeadLetter) error {
	type key struct{ signal, receiver string }
	var order []key
	counts := map[key]int{}
	for _, l := range letters {
		k := key{l.Signal, l.Receiver}
		if counts[k] == 0 {
			order = append(order, k)
		}
		counts[k]++
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SIGNAL\tRECEIVER\tLETTERS")
	for _, k := range order {
		fmt.Fprintf(tw, "%s\t%s\t%d\n", k.signal, k.receiver, counts[k])
	}
	return tw.Flush()
}

func printDeadLetter(w io.Writer, l signals.DeadLetter, now time.Time) error {
	when := func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return fmt.Sprintf("%s (%s ago)", t.UTC().Format(time.RFC3339Nano), health.Age(now.Sub(t)))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, f := range [][2]string{
		{"id", l.TaskID.String()},
		{"event_id", l.EventID.String()},
		{"signal", l.Signal},
		{"receiver", l.Receiver},
		{"queue", l.Queue},
		{"reason", string(l.Reason)},
		{"attempts", fmt.Sprint(l.Attempts)},
		{"sent", when(l.SentAt)},
		{"enqueued", when(l.EnqueuedAt)},
		{"dead", when(l.DeadAt)},
		{"error", l.Error},
	} {
		fmt.Fprintf(tw, "%s\t%s\n", f[0], f[1])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if l.Encoded {
		_, err := fmt.Fprintln(w, "payload\nencoded (by the application's RegistryConfig.Codec, which this command does not have)")
		return err
	}
	_, err := fmt.Fprintf(w, "payload\n%s\n", prettyJSON(l.Payload))
	return err
}

// deadJSON is a dead letter as JSON, with its payload as it was sent. Its
// id is the delivery's ID, the ID column of dead list and the task_id of
// the logs; event_id is the event's, which every receiver's letter shares.
type deadJSON struct {
	ID         string          `json:"id"`
	EventID    string          `json:"event_id"`
	Signal     string          `json:"signal"`
	Receiver   string          `json:"receiver"`
	Queue      string          `json:"queue"`
	Reason     string          `json:"reason"`
	Error      string          `json:"error"`
	Attempts   int             `json:"attempts"`
	SentAt     time.Time       `json:"sent_at"`
	EnqueuedAt *time.Time      `json:"enqueued_at"`
	DeadAt     time.Time       `json:"dead_at"`
	Payload    json.RawMessage `json:"payload"`           // null when encoded
	Encoded    bool            `json:"encoded,omitempty"` // the payload is encoded by a Codec this command lacks
}

func deadJSONs(letters []signals.DeadLetter) []deadJSON {
	out := make([]deadJSON, len(letters))
	for i, l := range letters {
		out[i] = deadJSON{
			ID: l.TaskID.String(), EventID: l.EventID.String(),
			Signal: l.Signal, Receiver: l.Receiver, Queue: l.Queue,
			Reason: string(l.Reason), Error: l.Error, Attempts: l.Attempts,
			SentAt: l.SentAt.UTC(), DeadAt: l.DeadAt.UTC(), Payload: l.Payload, Encoded: l.Encoded,
		}
		if !l.EnqueuedAt.IsZero() {
			t := l.EnqueuedAt.UTC()
			out[i].EnqueuedAt = &t
		}
		if !l.Encoded && !json.Valid(l.Payload) {
			// An undecodable letter may hold bytes that are not JSON: carry them as a string.
			out[i].Payload, _ = json.Marshal(string(l.Payload))
		}
	}
	return out
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// prettyJSON indents a payload, or returns it as it is if it is not JSON.
func prettyJSON(raw []byte) string {
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "  "); err != nil {
		return string(raw)
	}
	return b.String()
}

// oneLine shortens s to one line of at most n runes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
