package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// initScripts are the init scripts the packages install, relative to the
// module root.
var initScripts = []string{"init.d/S50sluice", "init.d/sluice.init"}

// repoFile returns the path of a file of the repository.
func repoFile(t testing.TB, rel string) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, rel)
}

// TestInitScriptsSyntax runs `sh -n` and shellcheck on every init script.
func TestInitScriptsSyntax(t *testing.T) {
	for _, s := range initScripts {
		path := repoFile(t, s)
		t.Run(filepath.Base(s), func(t *testing.T) {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode()&0o111 == 0 {
				t.Errorf("%s is not executable", s)
			}
			if out, err := exec.Command("sh", "-n", path).CombinedOutput(); err != nil {
				t.Errorf("sh -n %s: %v\n%s", s, err, out)
			}
			sc := requireTool(t, "shellcheck", "shellcheck")
			if out, err := exec.Command(sc, "--shell=sh", path).CombinedOutput(); err != nil {
				t.Errorf("shellcheck %s: %v\n%s", s, err, out)
			}
		})
	}
}

// initScript runs S50sluice with action in env and returns its output and
// exit code.
func initScript(t testing.TB, env []string, action string) (string, int) {
	t.Helper()
	cmd := exec.Command("sh", repoFile(t, "init.d/S50sluice"), action)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("S50sluice %s: %v", action, err)
	}
	return string(out), code
}

// TestInitSysvinitScript drives init.d/S50sluice through start, status,
// reload (valid and invalid), restart and stop against the real binary,
// with every path in a temporary directory.
func TestInitSysvinitScript(t *testing.T) {
	echoB := startEcho(t)
	cfg := newDaemonConfig(t)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg.write(t, forwardSection("web", addr, "tcp:"+closedPort(t)))
	pidfile := filepath.Join(cfg.dir, "sluice.pid")
	output := filepath.Join(cfg.dir, "stderr.log")
	env := []string{"SLUICE_BIN=" + sluiceBin(t), "SLUICE_CONF=" + cfg.path, "SLUICE_PIDFILE=" + pidfile, "SLUICE_OUTPUT=" + output}
	readPid := func() int {
		t.Helper()
		b, err := os.ReadFile(pidfile)
		if err != nil {
			t.Fatalf("pid file: %v", err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatalf("pid file %q: %v", b, err)
		}
		return pid
	}
	t.Cleanup(func() {
		if _, err := os.Stat(pidfile); err == nil {
			initScript(t, env, "stop")
		}
		if t.Failed() {
			b, _ := os.ReadFile(output)
			t.Logf("sluice output:\n%s", b)
		}
	})

	if out, code := initScript(t, env, "start"); code != 0 || !strings.Contains(out, "OK") {
		t.Fatalf("start: exit %d: %s", code, out)
	}
	pid := readPid()
	if comm, err := procComm(pid); err != nil || comm != "sluice" {
		t.Fatalf("pid %d is %q (%v), want sluice", pid, comm, err)
	}
	if out, code := initScript(t, env, "start"); code != 0 || !strings.Contains(out, "already running") {
		t.Errorf("second start: exit %d: %s", code, out)
	}
	if out, code := initScript(t, env, "status"); code != 0 || !strings.Contains(out, strconv.Itoa(pid)) {
		t.Errorf("status: exit %d: %s", code, out)
	}
	if err := roundTrip(addr); err == nil {
		t.Fatal("round trip to a closed upstream worked")
	}

	cfg.write(t, forwardSection("web", addr, echoB.upstream()))
	if out, code := initScript(t, env, "reload"); code != 0 || !strings.Contains(out, "OK") {
		t.Fatalf("reload: exit %d: %s", code, out)
	}
	if err := roundTrip(addr); err != nil {
		t.Fatalf("after reload: %v", err)
	}
	cfg.write(t, forwardSection("web", addr)) // no upstream
	if out, code := initScript(t, env, "reload"); code == 0 || !strings.Contains(out, "FAIL") {
		t.Errorf("reload of a broken config: exit %d: %s", code, out)
	}
	if err := roundTrip(addr); err != nil {
		t.Fatalf("after a rejected reload: %v", err)
	}
	if readPid() != pid {
		t.Fatal("the pid changed across reloads")
	}

	cfg.write(t, forwardSection("web", addr, echoB.upstream()))
	if out, code := initScript(t, env, "restart"); code != 0 || !strings.Contains(out, "OK") {
		t.Fatalf("restart: exit %d: %s", code, out)
	}
	newPid := readPid()
	if newPid == pid {
		t.Error("restart kept the same pid")
	}
	if err := roundTrip(addr); err != nil {
		t.Fatalf("after restart: %v", err)
	}

	if out, code := initScript(t, env, "stop"); code != 0 || !strings.Contains(out, "OK") {
		t.Fatalf("stop: exit %d: %s", code, out)
	}
	if _, err := os.Stat(pidfile); err == nil {
		t.Error("pid file left after stop")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := procComm(newPid); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sluice (pid %d) still runs after stop", newPid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if out, code := initScript(t, env, "status"); code != 3 || !strings.Contains(out, "stopped") {
		t.Errorf("status after stop: exit %d: %s", code, out)
	}

	// A broken config is refused at start, with nothing left running.
	cfg.write(t, "config forward 'x'\n")
	if out, code := initScript(t, env, "start"); code == 0 || !strings.Contains(out, "has errors") {
		t.Errorf("start with a broken config: exit %d: %s", code, out)
	}
	if _, err := os.Stat(pidfile); err == nil {
		t.Error("pid file written for a refused start")
	}
}

// TestInitProcdScript sources init.d/sluice.init with stand-ins for
// procd's shell functions (as /etc/rc.common would provide them), checks
// what it declares, then runs the declared command line against the real
// binary and delivers the declared reload signal, as procd does on
// `/etc/init.d/sluice reload`.
func TestInitProcdScript(t *testing.T) {
	echoB := startEcho(t)
	cfg := newDaemonConfig(t)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg.write(t, forwardSection("web", addr, "tcp:"+closedPort(t)))
	harness := `
procd_open_instance() { echo "open_instance"; }
procd_close_instance() { echo "close_instance"; }
procd_set_param() { echo "param $*"; }
procd_add_reload_trigger() { echo "reload_trigger $*"; }
. "$1"
PROG="$2"
CONF="$3"
start_service
service_triggers
`
	out, err := exec.Command("sh", "-c", harness, "sh", repoFile(t, "init.d/sluice.init"), sluiceBin(t), cfg.path).CombinedOutput()
	if err != nil {
		t.Fatalf("sourcing sluice.init: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	want := []string{
		"open_instance",
		"param command " + sluiceBin(t) + " run -c " + cfg.path,
		"param respawn 3600 5 5",
		"param stderr 1",
		"param file " + cfg.path,
		"param reload_signal HUP",
		"param term_timeout 15",
		"close_instance",
		"reload_trigger sluice",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Fatalf("sluice.init declares:\n%s\nwant:\n%s", out, strings.Join(want, "\n"))
	}
	args := strings.Fields(strings.TrimPrefix(want[1], "param command "+sluiceBin(t)+" "))
	p := startSluice(t, args...)
	cfg.write(t, forwardSection("web", addr, echoB.upstream()))
	p.signal(syscall.SIGHUP)
	if _, err := p.waitLog(5*time.Second, "msg=reloaded"); err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(addr); err != nil {
		t.Fatalf("after the reload signal: %v", err)
	}
	p.signal(syscall.SIGTERM)
	if code, took, err := p.waitExit(15 * time.Second); err != nil || code != 0 {
		t.Fatalf("after SIGTERM: exit %d after %v, %v (term_timeout is 15s)", code, took, err)
	}
}
