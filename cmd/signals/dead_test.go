package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
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
		r := b.signals(t, "dead", "show", letter.TaskID)
		requireCode(t, exitOK, r)
		require.Regexp(t, `(?m)^task +`+letter.TaskID+`$`, r.stdout)
		require.Regexp(t, `(?m)^reason +permanent$`, r.stdout)
		require.Regexp(t, `(?m)^error +.*smtp: 550 mailbox unavailable$`, r.stdout)
		require.Contains(t, r.stdout, "payload\n{\n  \"user_id\": 7\n}\n", "the payload is pretty-printed")

		r = b.signals(t, "dead", "show", "--json", letter.TaskID)
		requireCode(t, exitOK, r)
		var shown deadJSON
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &shown))
		require.JSONEq(t, string(letter.Payload), string(shown.Payload))
		letter.Payload, shown.Payload = nil, nil
		require.Equal(t, letter, shown)

		r = b.signals(t, "dead", "show", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
		requireCode(t, exitFailed, r)
		require.Contains(t, r.stderr, "no dead letter 01ARZ3NDEKTSV4RRFFQ69G5FAV")
		requireCode(t, exitUsage, b.signals(t, "dead", "show", "not-an-id"))
	})

	t.Run("requeue and discard need a selection", func(t *testing.T) {
		for _, verb := range []string{"requeue", "discard"} {
			r := b.signals(t, "dead", verb)
			requireCode(t, exitUsage, r)
			require.Contains(t, r.stderr, "--all for every one")
		}
		requireCode(t, exitUsage, b.signals(t, "dead", "discard", "--all", "--signal", "order.placed"))
		requireCode(t, exitUsage, b.signals(t, "dead", "discard", "--signal", "order.placed", list(t)[0].TaskID))
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
		id := list(t)[0].TaskID
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
