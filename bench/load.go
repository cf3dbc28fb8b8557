package main

// Load on the machine while a scenario runs. The 1-minute load average is
// sampled and reported, but it cannot tell a loaded machine from a busy
// benchmark: the benchmark's own senders and PostgreSQL backends raise it
// on every run. What distorts the figures is CPU taken
// by anything else, so that is what flags a scenario: the machine's busy
// time from /proc/stat minus the CPU time of this process, its children,
// and the PostgreSQL and Redis servers, from /proc/<pid>/stat.

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

const (
	// clockTicks is USER_HZ, the unit of /proc's CPU times; 100 on Linux.
	clockTicks = 100
	// loadedShare of the machine's CPU, used by other processes on average
	// during a scenario, flags it. On 2 cores that is 0.1 cores; a quiet
	// machine measures 0.00–0.07, mostly kernel threads completing the
	// benchmark's own fsyncs.
	loadedShare     = 0.05
	loadSampleEvery = time.Second
)

// loadedCores is loadedShare in cores.
var loadedCores = loadedShare * float64(runtime.NumCPU())

// benchProcesses are, besides this process and its descendants, the
// processes whose CPU is the benchmark's own work.
var benchProcesses = map[string]bool{"postgres": true, "postmaster": true, "redis-server": true}

// cpuSample is one reading of the machine's and the benchmark's CPU time.
type cpuSample struct {
	at    time.Time
	load1 float64
	busy  uint64 // ticks, all CPUs, but idle and iowait
	bench uint64 // ticks of the benchmark's processes, reaped children included
	ok    bool
}

// loadSummary describes the load during one scenario.
type loadSummary struct {
	load1Start, load1Max, load1End float64
	otherCores, otherCoresPeak     float64 // CPU used by other processes, in cores
	ok                             bool    // /proc could be read throughout
}

// loaded reports whether other processes took enough CPU to make the
// scenario's absolute figures unreliable.
func (l loadSummary) loaded() bool { return l.ok && l.otherCores >= loadedCores }

func (l loadSummary) loadAvg() string {
	if !l.ok {
		return "unknown"
	}
	return fmt.Sprintf("%.2f → max %.2f → %.2f", l.load1Start, l.load1Max, l.load1End)
}

func (l loadSummary) other() string {
	if !l.ok {
		return "unknown"
	}
	return fmt.Sprintf("%.2f cores (peak %.2f)", l.otherCores, l.otherCoresPeak)
}

// loadMonitor samples load until stopped.
type loadMonitor struct {
	stopc chan struct{}
	done  chan loadSummary
}

func startLoadMonitor() *loadMonitor {
	m := &loadMonitor{stopc: make(chan struct{}), done: make(chan loadSummary, 1)}
	first := sampleCPU()
	go func() {
		sum := loadSummary{load1Start: first.load1, load1Max: first.load1, ok: first.ok}
		prev := first
		tick := time.NewTicker(loadSampleEvery)
		defer tick.Stop()
		for stopped := false; !stopped; {
			select {
			case <-tick.C:
			case <-m.stopc:
				stopped = true
			}
			s := sampleCPU()
			sum.ok = sum.ok && s.ok
			if !sum.ok {
				continue
			}
			sum.load1Max, sum.load1End = max(sum.load1Max, s.load1), s.load1
			if d := s.at.Sub(prev.at); d >= loadSampleEvery/2 {
				sum.otherCoresPeak = max(sum.otherCoresPeak, otherCores(prev, s))
			}
			prev = s
		}
		if sum.ok {
			sum.otherCores = otherCores(first, prev)
		}
		m.done <- sum
	}()
	return m
}

// stop ends the sampling and returns the summary.
func (m *loadMonitor) stop() loadSummary {
	close(m.stopc)
	return <-m.done
}

// otherCores is the CPU, in cores, used between a and b by processes other
// than the benchmark's.
func otherCores(a, b cpuSample) float64 {
	secs := b.at.Sub(a.at).Seconds()
	if secs <= 0 || b.busy < a.busy {
		return 0
	}
	other := float64(b.busy-a.busy) - (float64(b.bench) - float64(a.bench))
	return max(0, other/clockTicks/secs)
}

func sampleCPU() cpuSample {
	s := cpuSample{at: time.Now(), ok: true}
	var err error
	if s.load1, err = readLoad1(); err != nil {
		s.ok = false
	}
	if s.busy, err = machineBusy(); err != nil {
		s.ok = false
	}
	if s.bench, err = benchTicks(); err != nil {
		s.ok = false
	}
	return s
}

func readLoad1() (float64, error) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("empty /proc/loadavg")
	}
	return strconv.ParseFloat(f[0], 64)
}

// machineBusy sums every CPU's ticks but idle and iowait. Interrupt time
// is in because the kernel also charges it to the process it interrupted,
// so the benchmark's loopback traffic counts on both sides; steal is in
// because another virtual machine took the CPU.
func machineBusy() (uint64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("unexpected /proc/stat: %q", line)
	}
	var sum uint64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system irq softirq steal
		v, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, nil
}

type procStat struct {
	ppid  int
	comm  string
	ticks uint64 // utime + stime + cutime + cstime
}

// benchTicks sums the CPU time of this process and its descendants and of
// every PostgreSQL and Redis server process, including the children each
// has reaped (PostgreSQL's exited backends, the drain's relay process).
func benchTicks() (uint64, error) {
	paths, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		return 0, err
	}
	procs := make(map[int]procStat, len(paths))
	for _, p := range paths {
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if st, err := readProcStat(p); err == nil {
			procs[pid] = st
		}
	}
	self := os.Getpid()
	if _, ok := procs[self]; !ok {
		return 0, fmt.Errorf("no /proc/%d/stat", self)
	}
	var sum uint64
	for pid, st := range procs {
		if benchProcesses[st.comm] || descends(procs, pid, self) {
			sum += st.ticks
		}
	}
	return sum, nil
}

func descends(procs map[int]procStat, pid, ancestor int) bool {
	for range 64 {
		if pid == ancestor {
			return true
		}
		st, ok := procs[pid]
		if !ok || pid <= 1 {
			return false
		}
		pid = st.ppid
	}
	return false
}

// readProcStat parses /proc/<pid>/stat; comm is in parentheses and may hold
// spaces, so fields are counted from the last ')'.
func readProcStat(path string) (procStat, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return procStat{}, err
	}
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return procStat{}, fmt.Errorf("%s: unexpected format", path)
	}
	f := strings.Fields(s[end+1:])
	// f[0] is field 3 (state); ppid is field 4, utime..cstime fields 14..17.
	if len(f) < 15 {
		return procStat{}, fmt.Errorf("%s: too few fields", path)
	}
	st := procStat{comm: s[open+1 : end]}
	if st.ppid, err = strconv.Atoi(f[1]); err != nil {
		return procStat{}, err
	}
	for _, i := range []int{11, 12, 13, 14} {
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return procStat{}, err
		}
		st.ticks += uint64(max(v, 0))
	}
	return st, nil
}

// loadNote explains the load columns of the scenario table.
func loadNote() string {
	return fmt.Sprintf("Load is sampled every %v while each scenario runs, on this machine's %d cores. The 1-minute load average includes "+
		"the benchmark's own work (senders, relay, workers, PostgreSQL backends waiting on fsync), so it climbs during every run and is reported, not judged. "+
		"Other processes' CPU is the machine's busy time (all but idle and iowait: /proc/stat) minus that of this process, its children, "+
		"and every postgres and redis-server process (/proc/<pid>/stat, reaped children included). "+
		"A scenario during which other processes used %.2f cores (%.0f%% of the machine) or more on average is flagged LOADED: "+
		"its absolute figures are not comparable with a quiet run's, and even its ratios may be skewed.",
		loadSampleEvery, runtime.NumCPU(), loadedCores, loadedShare*100)
}
