package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// clockTick is USER_HZ, the unit of CPU times in /proc/PID/stat.
const clockTick = 100

// tree returns pid and all its descendants.
func tree(pid int) []int {
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", out[i]))
		for _, t := range tasks {
			b, err := os.ReadFile(t)
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(b)) {
				if c, err := strconv.Atoi(f); err == nil {
					out = append(out, c)
				}
			}
		}
	}
	return out
}

// statFields returns the fields of /proc/PID/stat after the command name.
func statFields(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+2:]))
}

// cpuSeconds is utime+stime+cutime+cstime over pid's process tree: reaped
// children (socat's forks) count through cutime/cstime.
func cpuSeconds(pid int) float64 {
	var ticks int64
	for _, p := range tree(pid) {
		f := statFields(p)
		if len(f) < 15 {
			continue
		}
		for _, i := range []int{11, 12, 13, 14} { // utime stime cutime cstime
			v, _ := strconv.ParseInt(f[i], 10, 64)
			ticks += v
		}
	}
	return float64(ticks) / clockTick
}

// memoryKiB is the resident memory of pid's tree: VmRSS for a single
// process, the sum of PSS (proportional: pages shared by forked children
// counted once) for a tree of several, as socat's forks and nginx's master
// and worker are.
func memoryKiB(pid int) int64 {
	procs := tree(pid)
	if len(procs) == 1 {
		return rssKiB(pid)
	}
	var total int64
	for _, p := range procs {
		if v, ok := procField(fmt.Sprintf("/proc/%d/smaps_rollup", p), "Pss:"); ok {
			total += v
		}
	}
	return total
}

// rssKiB is VmRSS of one process.
func rssKiB(pid int) int64 {
	v, _ := procField(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:")
	return v
}

// contextSwitches sums voluntary and involuntary switches of every thread
// in pid's tree.
func contextSwitches(pid int) int64 {
	var total int64
	for _, p := range tree(pid) {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", p))
		for _, t := range tasks {
			a, _ := procField(t, "voluntary_ctxt_switches:")
			b, _ := procField(t, "nonvoluntary_ctxt_switches:")
			total += a + b
		}
	}
	return total
}

// threads counts the threads of pid's tree.
func threads(pid int) int {
	n := 0
	for _, p := range tree(pid) {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", p))
		n += len(tasks)
	}
	return n
}

// procField reads the first number after key in a /proc key-value file.
func procField(path, key string) (int64, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := s.Text()
		if strings.HasPrefix(line, key) {
			fields := strings.Fields(line[len(key):])
			if len(fields) == 0 {
				return 0, false
			}
			v, err := strconv.ParseInt(fields[0], 10, 64)
			return v, err == nil
		}
	}
	return 0, false
}
