package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"time"
)

// inboxCommand prunes the inbox that signals.Once records deliveries in.
func inboxCommand(ctx context.Context, args []string, stdout, _ io.Writer) error {
	fs := newFlagSet("inbox", "signals inbox prune --older-than D [connection flags]", stdout)
	var c connection
	c.addFlags(fs)
	var olderThan time.Duration
	fs.durationVar(&olderThan, "older-than", 0, "remove the rows recorded at least `D` ago (720h: 30 days); required")
	args, err := fs.parse(args)
	if err != nil {
		return err
	}
	switch {
	case len(args) == 0:
		return usagef("missing subcommand: signals inbox prune --older-than D")
	case args[0] != "prune":
		return usagef("unknown subcommand %q%s", args[0], cmp.Or(didYouMean(suggest(args[0], []string{"prune"})), ": signals inbox prune --older-than D"))
	case len(args) > 1:
		return usagef("unexpected argument %q", args[1])
	case olderThan <= 0:
		return usagef("--older-than is required: how old a row must be to go, such as 720h (30 days); keep it longer than an event can take to be delivered again")
	}
	s, err := c.open(ctx, false)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.checkSchema(ctx); err != nil {
		return err
	}
	n, err := s.ledger.PruneInbox(ctx, olderThan)
	if err != nil {
		return s.explain(err)
	}
	_, err = fmt.Fprintf(stdout, "removed %d inbox rows recorded before %s\n", n, time.Now().Add(-olderThan).UTC().Format(time.RFC3339))
	return err
}
