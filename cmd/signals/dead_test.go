package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/aesgcm"
)

func TestDead(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.deadLetters(t)

	// The subtests run in order: requeue and discard change what is dead.
	list := func(t *testing.T, args ...string) []deadJSON {
		t.Helper()
		r := b.signals(t, append([]string{"dead", "list", "--json"}, args...)...)
		requireCode(t, exitOK, r)
		var letters []deadJSON
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &letters), r.stdout)
		return letters
	}
	receivers := func(letters []deadJSON) []string {
		out := []string{}
		for _, l := range letters {
			out = append(out, l.Receiver)
		}
		return out
	}

	t.Run("list", func(t *testing.T) {
		r := b.signals(t, "dead", "list")
		requireCode(t, exitOK, r)
		require.Regexp(t, `(?m)^ID +SIGNAL +RECEIVER +REASON +ATTEMPTS +DEAD FOR +ERROR$`, r.stdout)
		require.Regexp(t, `(?m)^[0-9A-Z]{26} +order\.placed +notify-warehouse +permanent +1 +\S+ +.*unknown SKU "ghost"$`, r.stdout)
		require.Len(t, strings.Split(strings.TrimSpace(r.stdout), "\n"), 4, "a header and three letters")

		welcome := list(t, "--receiver", "send-welcome")
		require.Len(t, welcome, 1)
		require.JSONEq(t, `{"user_id": 7}`, string(welcome[0].Payload))
		require.NotNil(t, welcome[0].EnqueuedAt)
		require.Len(t, list(t), 3)
	})

	t.Run("list with filters", func(t *testing.T) {
		require.Equal(t, []string{"send-welcome"}, receivers(list(t, "--signal", "user.signed_up")))
		require.Equal(t, []string{"notify-warehouse", "notify-warehouse"}, receivers(list(t, "--receiver", "notify-warehouse")))
		require.Equal(t, []string{"send-welcome"}, receivers(list(t, "--error", "MAILBOX")), "the error text matches ignoring case")
		require.Len(t, list(t, "--since", "1h"), 3)
		require.Len(t, list(t, "--since", "2000-01-01T00:00:00Z"), 3)
		require.Empty(t, list(t, "--older-than", "1h"))
		require.Len(t, list(t, "--limit", "1"), 1)

		r := b.signals(t, "dead", "list", "--older-than", "1h")
		requireCode(t, exitOK, r)
		require.Equal(t, "no dead letters match\n", r.stdout)
		r = b.signals(t, "dead", "list", "--limit", "2")
		require.Contains(t, r.stdout, "more may match")

		requireCode(t, exitUsage, b.signals(t, "dead", "list", "--since", "yesterday"))
	})

	t.Run("show", func(t *testing.T) {
		letter := list(t, "--signal", "user.signed_up")[0]
		r := b.signals(t, "dead", "show", letter.ID)
		requireCode(t, exitOK, r)
		require.Regexp(t, `(?m)^id +`+letter.ID+`$`, r.stdout)
		require.Regexp(t, `(?m)^event_id +`+letter.EventID+`$`, r.stdout)
		require.Regexp(t, `(?m)^reason +permanent$`, r.stdout)
		require.Regexp(t, `(?m)^error +.*smtp: 550 mailbox unavailable$`, r.stdout)
		require.Contains(t, r.stdout, "payload\n{\n  \"user_id\": 7\n}\n", "the payload is pretty-printed")

		r = b.signals(t, "dead", "show", "--json", letter.ID)
		requireCode(t, exitOK, r)
		var keys map[string]any
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &keys))
		require.Equal(t, letter.ID, keys["id"], "the letter's ID is id, as dead list's column")
		require.NotContains(t, keys, "task_id")
		var shown deadJSON
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &shown))
		require.JSONEq(t, string(letter.Payload), string(shown.Payload))
		letter.Payload, shown.Payload = nil, nil
		require.Equal(t, letter, shown)

		r = b.signals(t, "dead", "show", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
		requireCode(t, exitFailed, r)
		require.Equal(t, "signals dead: no dead letter in schema "+b.schema+" has 01ARZ3NDEKTSV4RRFFQ69G5FAV as its ID or as its event's ID (requeued, discarded, delivered, or mistyped?)\n", r.stderr)
		r = b.signals(t, "dead", "show", "not-an-id")
		requireCode(t, exitUsage, r)
		require.Contains(t, r.stderr, `"not-an-id" is not an ID`)
	})

	t.Run("requeue and discard need a selection", func(t *testing.T) {
		for _, verb := range []string{"requeue", "discard"} {
			r := b.signals(t, "dead", verb)
			requireCode(t, exitUsage, r)
			require.Contains(t, r.stderr, "--all for every one")
		}
		requireCode(t, exitUsage, b.signals(t, "dead", "discard", "--all", "--signal", "order.placed"))
		requireCode(t, exitUsage, b.signals(t, "dead", "discard", "--signal", "order.placed", list(t)[0].ID))
		require.Len(t, list(t), 3, "nothing was touched")
	})

	t.Run("filters without --yes only show", func(t *testing.T) {
		r := b.signals(t, "dead", "discard", "--all")
		requireCode(t, exitOK, r)
		require.Contains(t, r.stdout, "would discard 3 dead letters")
		require.Regexp(t, `(?m)^order\.placed +notify-warehouse +2$`, r.stdout)
		require.Contains(t, r.stdout, "run again with --yes")
		require.Len(t, list(t), 3, "nothing was touched")
	})

	t.Run("requeue by filter", func(t *testing.T) {
		r := b.signals(t, "dead", "requeue", "--receiver", "notify-warehouse", "--yes")
		requireCode(t, exitOK, r)
		require.Equal(t, "requeued 2 dead letters\n", r.stdout)
		require.Equal(t, []string{"send-welcome"}, receivers(list(t)))
		require.Equal(t, 2, b.stats(t, "order.placed", "notify-warehouse").Pending, "back in the outbox, for a Dispatcher to send")
	})

	t.Run("discard by ID", func(t *testing.T) {
		id := list(t)[0].ID
		r := b.signals(t, "dead", "discard", id)
		requireCode(t, exitOK, r)
		require.Equal(t, "discarded 1 dead letter\n", r.stdout)
		require.Empty(t, list(t))

		r = b.signals(t, "dead", "discard", id)
		requireCode(t, exitFailed, r)
		require.Contains(t, r.stderr, "1 of the 1 IDs are not dead letters")
	})
}

func TestDeadOnAnUnmigratedSchema(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := runSignals(t, serverEnv(), "dead", "list", "--schema", b.schema+"_none")
	requireCode(t, exitCannotCheck, r)
	require.Contains(t, r.stderr, "run signals migrate --schema "+b.schema+"_none")
}

// refunds registers order.refunded with three receivers that refuse every
// refund, sends events of it and delivers them: it returns the events' IDs,
// each with three dead letters.
func (b *testBundle) refunds(t *testing.T, events int) []ulid.ULID {
	t.Helper()
	refunded := signals.Register[orderPlaced](b.reg, "order.refunded")
	for _, name := range []string{"card", "ledger", "mail"} {
		refunded.Connect(name, func(context.Context, signals.Event[orderPlaced]) error {
			return signals.Permanent(errors.New(name + ": refunds are closed"))
		}, signals.Queue(b.queue))
	}
	ids := make([]ulid.ULID, events)
	for i := range ids {
		ids[i] = send(t, b, refunded, orderPlaced{OrderID: i})
	}
	b.deliver(t, true, allDead(3*events))
	return ids
}

func TestDeadShowTakesAnEventID(t *testing.T) {
	t.Parallel()
	b := setup(t)
	events := b.refunds(t, 2)
	event := events[0].String()

	r := b.signals(t, "dead", "show", event)
	requireCode(t, exitOK, r)
	require.True(t, strings.HasPrefix(r.stdout, "event "+event+": 3 dead letters\n\nid "), r.stdout)
	require.Len(t, regexp.MustCompile(`(?m)^event_id +`+event+`$`).FindAllString(r.stdout, -1), 3, r.stdout)
	for _, receiver := range []string{"card", "ledger", "mail"} {
		require.Regexp(t, `(?m)^receiver +`+receiver+`$`, r.stdout)
	}
	require.NotContains(t, r.stdout, events[1].String(), "only the event's letters")

	r = b.signals(t, "dead", "show", event, "--json")
	requireCode(t, exitOK, r)
	var letters []deadJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &letters), "an array, as dead list prints")
	require.Len(t, letters, 3)
	for _, l := range letters {
		require.Equal(t, event, l.EventID)
		require.NotEqual(t, event, l.ID, "a letter's ID is its delivery's")
	}

	r = b.signals(t, "dead", "show", letters[0].ID)
	requireCode(t, exitOK, r)
	require.True(t, strings.HasPrefix(r.stdout, "id "), "a letter's ID shows the letter alone:\n%s", r.stdout)
	require.Equal(t, 1, strings.Count(r.stdout, "event_id"))
}

// TestDeadShowSaysAnEncodedPayloadIsEncoded buries an event its registry
// encrypted: the command, which has no codec, shows the letter and says its
// payload is encoded, in text and in JSON.
func TestDeadShowSaysAnEncodedPayloadIsEncoded(t *testing.T) {
	t.Parallel()
	b := setup(t)
	key := make([]byte, 32)
	_, err := rand.Read(key)
	require.NoError(t, err)
	codec, err := aesgcm.New(1, map[byte][]byte{1: key})
	require.NoError(t, err)
	b.reg, err = signals.NewRegistry(signals.RegistryConfig{Schema: b.schema, Codec: codec})
	require.NoError(t, err)
	sig := signals.Register[orderPlaced](b.reg, "order.placed")
	sig.Connect("refuse", func(context.Context, signals.Event[orderPlaced]) error {
		return signals.Permanent(errors.New("no"))
	}, signals.Queue(b.queue))
	event := send(t, b, sig, orderPlaced{OrderID: 7, SKU: "secret-sku"})
	b.deliver(t, true, allDead(1))

	r := b.signals(t, "dead", "show", event.String())
	requireCode(t, exitOK, r)
	require.Contains(t, r.stdout, "payload\nencoded (by the application's RegistryConfig.Codec")
	require.NotContains(t, r.stdout, "secret-sku")
	r = b.signals(t, "dead", "show", event.String(), "--json")
	requireCode(t, exitOK, r)
	var letters []deadJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &letters))
	require.Len(t, letters, 1)
	require.True(t, letters[0].Encoded)
	require.Equal(t, "null", string(letters[0].Payload))
}
