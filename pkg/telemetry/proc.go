package telemetry

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of utime and stime in /proc/PID/task/TID/stat: Linux
// reports them in USER_HZ, 100 on every architecture sluice targets.
const userHZ = 100

// readTasks lists the process's threads with their CPU time from
// /proc/self/task/*/stat, sorted by TID.
func readTasks(procRoot string) ([]Thread, error) {
	dir := filepath.Join(procRoot, "self", "task")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read threads: %w", err)
	}
	ts := make([]Thread, 0, len(ents))
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "stat"))
		if err != nil {
			continue // the thread exited meanwhile
		}
		cpu, err := parseStatCPU(string(b))
		if err != nil {
			return nil, fmt.Errorf("read thread %d: %w", tid, err)
		}
		ts = append(ts, Thread{TID: tid, CPUTotal: cpu})
	}
	slices.SortFunc(ts, func(a, b Thread) int { return a.TID - b.TID })
	return ts, nil
}

// parseStatCPU returns utime+stime from a /proc stat line. The command name
// (field 2) may hold spaces and parentheses, so fields are counted after
// its last ')': state is field 3, utime 14, stime 15.
func parseStatCPU(line string) (time.Duration, error) {
	i := strings.LastIndexByte(line, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse stat: no command name in %q", line)
	}
	f := strings.Fields(line[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("parse stat: %d fields after the command name, want at least 13", len(f))
	}
	var ticks uint64
	for _, s := range f[11:13] {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse stat: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// readMeminfo returns MemAvailable and MemTotal from /proc/meminfo, in
// bytes; zeros if the kernel does not report them (MemAvailable is from
// 3.14).
func readMeminfo(procRoot string) (avail, total uint64, err error) {
	b, err := os.ReadFile(filepath.Join(procRoot, "meminfo"))
	if err != nil {
		return 0, 0, fmt.Errorf("read meminfo: %w", err)
	}
	avail, total = parseMeminfo(string(b))
	return avail, total, nil
}

// parseMeminfo reads the "MemTotal:  N kB" and "MemAvailable: N kB" lines.
func parseMeminfo(s string) (avail, total uint64) {
	for line := range strings.SplitSeq(s, "\n") {
		key, rest, ok := strings.Cut(line, ":")
		if !ok || (key != "MemTotal" && key != "MemAvailable") {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			continue
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			continue
		}
		if key == "MemTotal" {
			total = n << 10
		} else {
			avail = n << 10
		}
	}
	return avail, total
}
