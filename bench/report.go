package main

// The report: tables printed as they complete, then written as markdown.

import (
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

type table struct {
	title, note string
	header      []string
	rows        [][]string
}

type target struct {
	what, got string
	met       bool
}

type report struct {
	command string
	machine [][2]string
	tables  []*table
	targets []target
	notes   []string
}

// add records t and prints it at once.
func (r *report) add(t *table) {
	r.tables = append(r.tables, t)
	fmt.Printf("\n== %s\n", t.title)
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, strings.Join(t.header, "\t"))
	for _, row := range t.rows {
		fmt.Fprintln(w, strings.Join(row, "\t"))
	}
	w.Flush()
}

func (r *report) target(what, got string, met bool) {
	r.targets = append(r.targets, target{what, got, met})
}

func (t target) verdict() string {
	if t.met {
		return "met"
	}
	return "MISSED"
}

func (r *report) printTargets(w io.Writer) {
	fmt.Fprintln(w, "\n== Targets")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, t := range r.targets {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", t.verdict(), t.what, t.got)
	}
	tw.Flush()
}

func (r *report) markdown(w io.Writer) {
	fmt.Fprintln(w, "# dj-signals benchmarks")
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Command (from the repository root): `%s`\n\n", r.command)
	fmt.Fprintln(w, "| machine | |")
	fmt.Fprintln(w, "|---|---|")
	for _, kv := range r.machine {
		fmt.Fprintf(w, "| %s | %s |\n", kv[0], esc(kv[1]))
	}
	for _, n := range r.notes {
		fmt.Fprintf(w, "\n%s\n", n)
	}
	if len(r.targets) > 0 {
		fmt.Fprintln(w, "\n## Targets")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| target | result | figure |")
		fmt.Fprintln(w, "|---|---|---|")
		for _, t := range r.targets {
			v := t.verdict()
			if !t.met {
				v = "**" + v + "**"
			}
			fmt.Fprintf(w, "| %s | %s | %s |\n", esc(t.what), v, esc(t.got))
		}
	}
	for _, t := range r.tables {
		fmt.Fprintf(w, "\n## %s\n\n%s\n\n", t.title, t.note)
		fmt.Fprintf(w, "| %s |\n", strings.Join(mapEsc(t.header), " | "))
		fmt.Fprintf(w, "|%s\n", strings.Repeat("---|", len(t.header)))
		for _, row := range t.rows {
			fmt.Fprintf(w, "| %s |\n", strings.Join(mapEsc(row), " | "))
		}
	}
}

func esc(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

func mapEsc(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = esc(s)
	}
	return out
}

// progress prints one line about a finished measurement to stderr.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "  "+format+"\n", args...)
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func minMax(xs []float64) (float64, float64) {
	if len(xs) == 0 {
		return math.NaN(), math.NaN()
	}
	return slices.Min(xs), slices.Max(xs)
}

// pct returns the p-th percentile (nearest rank) of sorted durations.
func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ratio(x, base float64) string {
	if base == 0 || math.IsNaN(x) || math.IsNaN(base) {
		return "–"
	}
	return fmt.Sprintf("%.2f×", x/base)
}

func fmtRate(x float64) string {
	if math.IsNaN(x) {
		return "–"
	}
	return fmtCount(int(math.Round(x)))
}

// fmtCount writes n with thin thousands separators: 12,345.
func fmtCount(n int) string {
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 && c != '-' && s[i-1] != '-' {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	}
}
