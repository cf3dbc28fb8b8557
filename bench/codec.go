package main

// What a payload codec costs: the cost-per-event run through a registry
// that encrypts every payload with AES-GCM (package aesgcm), beside the same
// run in clear.

import (
	"context"
	"crypto/rand"
	"fmt"

	"github.com/dj-signals/signals"
	"github.com/dj-signals/signals/aesgcm"
)

// sysCodec is the system whose registry encrypts payloads.
const sysCodec = "dj-signals, AES-GCM codec"

// codecSystem returns a system like dj-signals' on a registry of f's
// schema with an AES-GCM codec, sending a signal of its own to a no-op
// receiver on f's queue.
func (f *fixture) codecSystem() (system, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return system{}, err
	}
	codec, err := aesgcm.New(1, map[byte][]byte{1: key})
	if err != nil {
		return system{}, err
	}
	reg, err := signals.NewRegistry(signals.RegistryConfig{Schema: f.schema, Codec: codec})
	if err != nil {
		return system{}, err
	}
	sig := signals.Register[order](reg, "bench.order_placed_encoded")
	sig.Connect("noop", func(_ context.Context, e signals.Event[order]) error {
		f.track.Load().started(e.Payload.Seq)
		return nil
	}, signals.Queue(f.queue))
	return f.signalsSystemOn(sysCodec, reg, sig, signals.DispatcherConfig{}, signals.WorkerConfig{}), nil
}

// codecTable adds the codec's figures beside dj-signals' in clear.
func codecTable(r *report, runs map[string][]cost, o options) {
	t := &table{
		title: "Cost per event: payloads encrypted with AES-GCM",
		note: fmt.Sprintf("The cost-per-event run through a registry whose RegistryConfig.Codec is aesgcm (AES-256-GCM, a fresh nonce per payload: "+
			"29 bytes more per payload, stored in the outbox and carried in the asynq task), beside dj-signals in clear. Median of %d runs.", o.reps),
		header: append([]string{"system"}, costHeader...),
	}
	clear, enc := costFigures(runs[sysSignals], o.events), costFigures(runs[sysCodec], o.events)
	t.rows = append(t.rows,
		append([]string{"in clear"}, costCells(clear)...),
		append([]string{"AES-GCM codec"}, costCells(enc)...),
	)
	ratio := []string{"codec ÷ clear"}
	for i := range enc[:len(enc)-1] {
		ratio = append(ratio, costRatio(i, enc[i], clear[i]))
	}
	t.rows = append(t.rows, append(ratio, ""))
	r.add(t)
}
