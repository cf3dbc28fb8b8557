package main

// The report: tables printed as they complete, then written as markdown.

import (
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

type table struct {
	title, note string
	header      []string
	rows        [][]string
	scenario    *scenarioRun
}

type target struct {
	what, got string
	met       bool
	scenario  *scenarioRun
}

// scenarioRun is how one scenario went: whether it measured, how long it
// took, the load meanwhile, and its cleanup warnings.
type scenarioRun struct {
	name     string
	ran      bool  // started (false: skipped after an interrupt)
	err      error // the scenario could not measure
	took     time.Duration
	load     loadSummary
	warnings []string
}

func (s *scenarioRun) result() string {
	switch {
	case !s.ran:
		return "not run (interrupted)"
	case s.err != nil:
		return "**FAILED**: " + s.err.Error()
	default:
		return "measured"
	}
}

func (s *scenarioRun) figures() string {
	switch {
	case !s.ran || s.err != nil:
		return "–"
	case !s.load.ok:
		return "load unknown"
	case s.load.loaded():
		return "**LOADED: unreliable**"
	default:
		return "quiet"
	}
}

type report struct {
	command   string
	machine   [][2]string
	tables    []*table
	targets   []target
	notes     []string
	scenarios []*scenarioRun

	mu      sync.Mutex // guards current's warnings: warn may come from any goroutine
	current *scenarioRun
}

// begin makes name the scenario that later tables, targets and warnings
// belong to.
func (r *report) begin(name string) *scenarioRun {
	s := &scenarioRun{name: name, ran: true}
	r.mu.Lock()
	r.scenarios = append(r.scenarios, s)
	r.current = s
	r.mu.Unlock()
	return s
}

// skip records a scenario that was not run.
func (r *report) skip(name string) {
	r.scenarios = append(r.scenarios, &scenarioRun{name: name})
}

// warn records a problem that leaves the figures valid, such as a failed
// cleanup, and prints it at once.
func (r *report) warn(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.mu.Lock()
	defer r.mu.Unlock()
	name := "run"
	if r.current != nil {
		r.current.warnings = append(r.current.warnings, msg)
		name = r.current.name
	} else {
		r.notes = append(r.notes, "Warning: "+msg)
	}
	fmt.Fprintf(os.Stderr, "bench: warning (%s): %s\n", name, msg)
}

// failed lists the scenarios that did not measure.
func (r *report) failed() []*scenarioRun {
	var out []*scenarioRun
	for _, s := range r.scenarios {
		if !s.ran || s.err != nil {
			out = append(out, s)
		}
	}
	return out
}

func (r *report) loaded() []string {
	var out []string
	for _, s := range r.scenarios {
		if s.ran && s.load.loaded() {
			out = append(out, s.name)
		}
	}
	return out
}

// verdict is the run's status in one paragraph: what failed, what was
// measured on a loaded machine.
func (r *report) verdict() string {
	var b strings.Builder
	if f := r.failed(); len(f) > 0 {
		names := make([]string, len(f))
		for i, s := range f {
			names[i] = s.name
		}
		fmt.Fprintf(&b, "**INCOMPLETE RUN: scenario(s) %s did not measure** (see below); the exit status is 1. ", strings.Join(names, ", "))
	} else {
		fmt.Fprintf(&b, "Every scenario measured (%d of %d); the exit status is 0. ", len(r.scenarios), len(r.scenarios))
	}
	if l := r.loaded(); len(l) > 0 {
		fmt.Fprintf(&b, "**LOADED MACHINE during %s**: other processes used %.2f cores or more on average, "+
			"so those figures are unreliable and must not be compared with a quiet run's.", strings.Join(l, ", "), loadedCores)
	} else {
		b.WriteString("No scenario ran on a loaded machine.")
	}
	return b.String()
}

// add records t and prints it at once.
func (r *report) add(t *table) {
	t.scenario = r.current
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
	r.targets = append(r.targets, target{what, got, met, r.current})
}

func (t target) verdict() string {
	v := "MISSED"
	if t.met {
		v = "met"
	}
	if t.scenario != nil && t.scenario.load.loaded() {
		v += " (loaded machine)"
	}
	return v
}

// printSummary prints the scenarios' status and the targets.
func (r *report) printSummary(w io.Writer) {
	fmt.Fprintln(w, "\n== Scenarios")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tresult\ttime\tload avg 1 min\tother processes' CPU\tfigures")
	for _, s := range r.scenarios {
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\t%s\n", s.name, strings.ReplaceAll(s.result(), "**", ""),
			s.took.Round(time.Second), s.load.loadAvg(), s.load.other(), strings.ReplaceAll(s.figures(), "**", ""))
	}
	tw.Flush()
	for _, s := range r.scenarios {
		for _, msg := range s.warnings {
			fmt.Fprintf(w, "warning (%s): %s\n", s.name, msg)
		}
	}
	fmt.Fprintln(w, strings.ReplaceAll(r.verdict(), "**", ""))

	fmt.Fprintln(w, "\n== Targets")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
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

	fmt.Fprintf(w, "\n## Run status\n\n%s\n\n", r.verdict())
	fmt.Fprintln(w, "| scenario | result | time | load average, 1 min: start → max → end | other processes' CPU: mean (peak 1 s) | figures |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	for _, s := range r.scenarios {
		fmt.Fprintf(w, "| %s | %s | %v | %s | %s | %s |\n", s.name, esc(s.result()), s.took.Round(time.Second),
			s.load.loadAvg(), s.load.other(), s.figures())
	}
	fmt.Fprintf(w, "\n%s\n", loadNote())
	var warned bool
	for _, s := range r.scenarios {
		for _, msg := range s.warnings {
			if !warned {
				fmt.Fprintln(w, "\nWarnings (cleanup after the measurements; no figure depends on them):")
				fmt.Fprintln(w)
				warned = true
			}
			fmt.Fprintf(w, "- %s: %s\n", s.name, msg)
		}
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
		note := t.note
		if t.scenario != nil && t.scenario.load.loaded() {
			note = fmt.Sprintf("**Measured on a loaded machine** (other processes used %s): these absolute figures are unreliable. ", t.scenario.load.other()) + note
		}
		fmt.Fprintf(w, "\n## %s\n\n%s\n\n", t.title, note)
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
