//go:build !nobpf

package telemetry

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// cgroupPrefix names the cgroups sluice creates: sluice-PID.
const cgroupPrefix = "sluice-"

// cgroup is the child cgroup v2 sluice created and moved itself into, so
// that a cgroup-attached program sees only sluice's sockets.
type cgroup struct {
	dir    string // the cgroup sluice created
	parent string // where the process was before, and goes back to
	pid    int
}

// joinCgroup creates PARENT/sluice-PID under the process's cgroup v2 and
// moves the whole process (every thread) into it. Empty sluice-* cgroups
// left behind by a process that died without Close (SIGKILL) are removed
// first.
func joinCgroup(cfg Config, pid int) (*cgroup, error) {
	root := cfg.CgroupRoot
	if root == "" {
		var err error
		if root, err = cgroup2Mount(cfg.ProcRoot); err != nil {
			return nil, err
		}
	}
	rel, err := ownCgroup(cfg.ProcRoot)
	if err != nil {
		return nil, err
	}
	parent := filepath.Join(root, rel)
	removeStale(parent, cfg.ProcRoot)
	dir := filepath.Join(parent, cgroupPrefix+strconv.Itoa(pid))
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("create cgroup: %w", err)
	}
	if err := moveTo(dir, pid); err != nil {
		return nil, errors.Join(err, os.Remove(dir))
	}
	return &cgroup{dir: dir, parent: parent, pid: pid}, nil
}

// leave moves the process back to its original cgroup and removes the one
// it created.
func (c *cgroup) leave() error {
	if err := moveTo(c.parent, c.pid); err != nil {
		return err
	}
	if err := os.Remove(c.dir); err != nil {
		return fmt.Errorf("remove cgroup: %w", err)
	}
	return nil
}

func moveTo(dir string, pid int) error {
	err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
	if err != nil {
		return fmt.Errorf("move process %d to cgroup %s: %w", pid, dir, err)
	}
	return nil
}

// removeStale removes empty sluice-PID cgroups whose process is gone.
func removeStale(parent, procRoot string) {
	ents, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range ents {
		pid, ok := strings.CutPrefix(e.Name(), cgroupPrefix)
		if !ok || !e.IsDir() {
			continue
		}
		if _, err := strconv.Atoi(pid); err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(procRoot, pid)); err == nil {
			continue // still running
		}
		// rmdir fails on a cgroup that still has processes: that is fine.
		_ = os.Remove(filepath.Join(parent, e.Name()))
	}
}

// cgroup2Mount finds where the cgroup v2 hierarchy is mounted.
func cgroup2Mount(procRoot string) (string, error) {
	f, err := os.Open(filepath.Join(procRoot, "self", "mountinfo"))
	if err != nil {
		return "", fmt.Errorf("find cgroup v2: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if dir, ok := parseCgroup2Mount(sc.Text()); ok {
			return dir, nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("find cgroup v2: %w", err)
	}
	return "", errors.New("find cgroup v2: not mounted")
}

// parseCgroup2Mount reads one mountinfo line: "ID PARENT MAJ:MIN ROOT
// MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS".
func parseCgroup2Mount(line string) (string, bool) {
	pre, post, ok := strings.Cut(line, " - ")
	if !ok {
		return "", false
	}
	f, g := strings.Fields(pre), strings.Fields(post)
	if len(f) < 5 || len(g) < 1 || g[0] != "cgroup2" {
		return "", false
	}
	return f[4], true
}

// ownCgroup returns the process's cgroup v2 path (the "0::" line of
// /proc/self/cgroup).
func ownCgroup(procRoot string) (string, error) {
	b, err := os.ReadFile(filepath.Join(procRoot, "self", "cgroup"))
	if err != nil {
		return "", fmt.Errorf("read own cgroup: %w", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p, nil
		}
	}
	return "", errors.New("read own cgroup: no cgroup v2 entry")
}
