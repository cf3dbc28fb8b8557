package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/internal/health"
)

// problem is a health.Problem as status prints it in JSON, with its
// message.
type problem struct {
	health.Problem
	Message string `json:"message"`
}

func statusCommand(ctx context.Context, args []string, stdout, _ io.Writer) error {
	fs := newFlagSet("status", "signals status [--json] [--max-pending-age D] [--max-in-flight-age D] [--max-due-ahead D] [connection flags]", stdout)
	var c connection
	c.addFlags(fs)
	lim := health.Defaults
	asJSON := fs.Bool("json", false, "print JSON instead of tables")
	fs.durationVar(&lim.MaxPendingAge, "max-pending-age", lim.MaxPendingAge, "a pending row older than `D` is a problem (no Dispatcher keeps up); 0 turns the check off")
	fs.durationVar(&lim.MaxInFlightAge, "max-in-flight-age", lim.MaxInFlightAge, "a row enqueued longer than `D` ago is a problem (its receiver keeps failing); rows delayed with At count too; 0 (the default) turns the check off")
	fs.durationVar(&lim.MaxDueAhead, "max-due-ahead", lim.MaxDueAhead, "a row due more than `D` from now is a problem (a wrong At); 0 turns the check off")
	args, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	st, err := readStats(ctx, &c)
	if err != nil {
		if *asJSON {
			_ = json.NewEncoder(stdout).Encode(map[string]string{"error": message(err)})
		}
		return err
	}
	problems := statusProblems(st, lim)
	if *asJSON {
		err = printStatusJSON(stdout, c.schema, st, problems)
	} else {
		err = printStatus(stdout, c.schema, st, problems)
	}
	if err != nil {
		return err
	}
	if len(problems) > 0 {
		return errUnhealthy
	}
	return nil
}

// readStats connects and takes the snapshot; every error means the status
// could not be checked.
func readStats(ctx context.Context, c *connection) (signals.Stats, error) {
	s, err := c.open(ctx, true)
	if err != nil {
		return signals.Stats{}, err
	}
	defer s.Close()
	st, err := s.ledger.Stats(ctx)
	var cannotCheck cannotCheckError
	if err = s.explain(err); err != nil && !errors.As(err, &cannotCheck) {
		err = cannotCheckError{err}
	}
	return st, err
}

// statusProblems lists what is wrong in st under lim, each with its
// message: a receiver's dead letters say how to list them.
func statusProblems(st signals.Stats, lim health.Limits) []problem {
	out := []problem{}
	for _, p := range health.Problems(st, lim) {
		msg := p.Subject("/") + ": " + p.Detail
		if p.Kind == "dead" {
			msg += fmt.Sprintf(": see signals dead list --signal %s --receiver %s", p.Signal, p.Receiver)
		}
		out = append(out, problem{Problem: p, Message: msg})
	}
	return out
}

func printStatus(w io.Writer, schema string, st signals.Stats, problems []problem) error {
	fmt.Fprintf(w, "schema %s at %s\n\n", schema, st.At.UTC().Format(time.RFC3339))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if len(st.Receivers) == 0 {
		fmt.Fprintln(tw, "no rows pending, in flight or dead")
	} else {
		fmt.Fprintln(tw, "SIGNAL\tRECEIVER\tPENDING\tIN FLIGHT\tDEAD\tHELD KEYS\tOLDEST PENDING\tOLDEST IN FLIGHT")
		for _, r := range st.Receivers {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", r.Signal, r.Receiver, r.Pending, r.InFlight, r.Dead, r.HeldKeys, health.Age(r.OldestPending), health.Age(r.OldestInFlight))
		}
	}
	if len(st.Queues) > 0 {
		fmt.Fprintln(tw, "\nQUEUE\tPENDING\tACTIVE\tSCHEDULED\tRETRY\tARCHIVED\tSERVED")
		for _, q := range st.Queues {
			served := "no"
			if q.Served {
				served = "yes"
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%s\n", q.Queue, q.Pending, q.Active, q.Scheduled, q.Retry, q.Archived, served)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(problems) == 0 {
		_, err := fmt.Fprintln(w, "\nhealthy")
		return err
	}
	fmt.Fprintln(w, "\nPROBLEMS")
	for _, p := range problems {
		fmt.Fprintf(w, "  %s\n", p.Message)
	}
	_, err := fmt.Fprintf(w, "\nunhealthy: %s\n", health.Count(len(problems), "problem"))
	return err
}

// The JSON shapes: stable snake_case names, ages in seconds.
type (
	statusJSON struct {
		Schema    string         `json:"schema"`
		At        time.Time      `json:"at"`
		Healthy   bool           `json:"healthy"`
		Receivers []receiverJSON `json:"receivers"`
		Queues    []queueJSON    `json:"queues"`
		Problems  []problem      `json:"problems"`
	}
	receiverJSON struct {
		Signal                string     `json:"signal"`
		Receiver              string     `json:"receiver"`
		Pending               int        `json:"pending"`
		InFlight              int        `json:"in_flight"`
		Dead                  int        `json:"dead"`
		HeldKeys              int        `json:"held_keys"`
		OldestPendingSeconds  float64    `json:"oldest_pending_seconds"`
		OldestInFlightSeconds float64    `json:"oldest_in_flight_seconds"`
		LatestDue             *time.Time `json:"latest_due,omitempty"`
	}
	queueJSON struct {
		Queue           string `json:"queue"`
		Pending         int    `json:"pending"`
		Active          int    `json:"active"`
		Scheduled       int    `json:"scheduled"`
		Retry           int    `json:"retry"`
		Archived        int    `json:"archived"`
		Completed       int    `json:"completed"`
		Served          bool   `json:"served"`
		UnknownReceiver int    `json:"unknown_receiver"`
	}
)

func printStatusJSON(w io.Writer, schema string, st signals.Stats, problems []problem) error {
	out := statusJSON{Schema: schema, At: st.At.UTC(), Healthy: len(problems) == 0, Receivers: []receiverJSON{}, Queues: []queueJSON{}, Problems: problems}
	for _, r := range st.Receivers {
		rj := receiverJSON{
			Signal: r.Signal, Receiver: r.Receiver, Pending: r.Pending, InFlight: r.InFlight, Dead: r.Dead, HeldKeys: r.HeldKeys,
			OldestPendingSeconds: seconds(r.OldestPending), OldestInFlightSeconds: seconds(r.OldestInFlight),
		}
		if !r.LatestDue.IsZero() {
			due := r.LatestDue.UTC()
			rj.LatestDue = &due
		}
		out.Receivers = append(out.Receivers, rj)
	}
	for _, q := range st.Queues {
		out.Queues = append(out.Queues, queueJSON{
			Queue: q.Queue, Pending: q.Pending, Active: q.Active, Scheduled: q.Scheduled, Retry: q.Retry,
			Archived: q.Archived, Completed: q.Completed, Served: q.Served, UnknownReceiver: q.UnknownReceiver,
		})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// seconds is d in seconds, to the millisecond.
func seconds(d time.Duration) float64 { return d.Round(time.Millisecond).Seconds() }
