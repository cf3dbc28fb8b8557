package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/dj-signals/signals"
)

// relayCommand runs a Dispatcher. It needs no signals or receivers: the
// outbox rows say where each goes. It checks the servers and the schema
// before it starts, so a wrong address or a missing migration fails at
// once, with exit code 3; an outage once running only makes it back off.
func relayCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("relay", "signals relay [connection flags]", stdout)
	var c connection
	c.addFlags(fs)
	args, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(stderr, nil))

	s, err := c.open(ctx, true)
	if err != nil {
		return err
	}
	defer s.Close()
	d, err := signals.NewDispatcher(s.reg, s.pool, s.redis, signals.DispatcherConfig{Logger: log})
	if err != nil {
		return err
	}
	checkCtx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if err := s.checkSchema(checkCtx); err != nil {
		return err
	}
	log.Info("signals relay started", "schema", c.schema, "redis", c.redisLabel())
	if err := d.Run(ctx); err != nil {
		return err
	}
	log.Info("signals relay stopped", "schema", c.schema)
	return nil
}
