package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// traceOf returns the ended spans of the trace that holds the span whose
// attribute key has the value, in start order; nil if there is none.
func traceOf(spans []sdktrace.ReadOnlySpan, key attribute.Key, value string) []sdktrace.ReadOnlySpan {
	var id trace.TraceID
	for _, s := range spans {
		if attr(s, key) == value {
			id = s.SpanContext().TraceID()
			break
		}
	}
	if !id.IsValid() {
		return nil
	}
	var out []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.SpanContext().TraceID() == id {
			out = append(out, s)
		}
	}
	slices.SortStableFunc(out, func(a, b sdktrace.ReadOnlySpan) int { return a.StartTime().Compare(b.StartTime()) })
	return out
}

// writeTraceTree writes spans (one trace, in start order) as a tree, each
// line prefixed with indent: a child under its parent, with when it started
// after the first span and how long it took.
func writeTraceTree(w io.Writer, indent string, spans []sdktrace.ReadOnlySpan) error {
	if len(spans) == 0 {
		return nil
	}
	children := map[trace.SpanID][]sdktrace.ReadOnlySpan{}
	known := map[trace.SpanID]bool{}
	for _, s := range spans {
		known[s.SpanContext().SpanID()] = true
	}
	var roots []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if p := s.Parent().SpanID(); known[p] {
			children[p] = append(children[p], s)
		} else {
			roots = append(roots, s)
		}
	}
	origin := spans[0].StartTime()

	type row struct{ label, start, took, failure string }
	var rows []row
	var walk func(s sdktrace.ReadOnlySpan, branch, prefix string)
	walk = func(s sdktrace.ReadOnlySpan, branch, prefix string) {
		r := row{
			label: prefix + branch + spanLabel(s),
			start: "+" + millis(s.StartTime().Sub(origin)),
			took:  millis(s.EndTime().Sub(s.StartTime())),
		}
		if s.Status().Code == codes.Error {
			r.failure = "error: " + s.Status().Description
		}
		rows = append(rows, r)
		next := prefix
		switch branch {
		case "├─ ":
			next += "│  "
		case "└─ ":
			next += "   "
		}
		kids := children[s.SpanContext().SpanID()]
		for i, c := range kids {
			branch := "├─ "
			if i == len(kids)-1 {
				branch = "└─ "
			}
			walk(c, branch, next)
		}
	}
	for _, r := range roots {
		walk(r, "", "")
	}

	rows = append([]row{{label: "trace " + spans[0].SpanContext().TraceID().String(), start: "start", took: "took"}}, rows...)
	width := 0
	for _, r := range rows {
		width = max(width, utf8.RuneCountInString(r.label))
	}
	// fmt pads to a width in runes, which the tree's box-drawing characters
	// need.
	for _, r := range rows {
		line := fmt.Sprintf("%s%-*s  %9s  %8s  %s", indent, width, r.label, r.start, r.took, r.failure)
		if _, err := fmt.Fprintln(w, strings.TrimRight(line, " ")); err != nil {
			return err
		}
	}
	return nil
}

// spanLabel names a span and, for a delivery's spans, its attempt.
func spanLabel(s sdktrace.ReadOnlySpan) string {
	var b strings.Builder
	b.WriteString(s.Name())
	if a := attr(s, "signals.attempt"); a != "" {
		b.WriteString(", attempt " + a)
	}
	return b.String()
}

func attr(s sdktrace.ReadOnlySpan, key attribute.Key) string {
	for _, kv := range s.Attributes() {
		if kv.Key == key {
			return kv.Value.Emit()
		}
	}
	return ""
}

// millis formats d in milliseconds with one decimal.
func millis(d time.Duration) string {
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}
