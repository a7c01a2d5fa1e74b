package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// relayCPU and loadCPU are the CPUs the relay and everything else run on.
const (
	relayCPU = "0"
	loadCPU  = "1"
)

// relaySpec is one contender: how to start it forwarding listen to upstream.
type relaySpec struct {
	name string
	// kind groups variants of one program; the best peer is the best of
	// every relay whose kind is not "sluice" or "direct".
	kind string
	// args returns the command line; dir is a scratch folder for configs.
	args func(b *bench, dir, listen, upstream string) ([]string, error)
}

func (r relaySpec) isPeer() bool { return r.kind != "sluice" && r.kind != "direct" }

// relaySpecs lists every contender, in table order.
func relaySpecs() []relaySpec {
	sluice := func(loops string) func(*bench, string, string, string) ([]string, error) {
		return func(b *bench, _, l, u string) ([]string, error) {
			args := []string{b.sluice, "forward", "--log-level", "warn"}
			if loops != "" {
				args = append(args, "--loops", loops)
			}
			return append(args, l, u), nil
		}
	}
	haproxy := func(threads int, splice bool) func(*bench, string, string, string) ([]string, error) {
		return func(_ *bench, dir, l, u string) ([]string, error) {
			opt := ""
			if splice {
				opt = "  option splice-auto\n"
			}
			cfg := fmt.Sprintf(`global
  maxconn 9200
  maxpipes 256
  nbthread %d
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
%slisten relay
  bind %s
  server up %s
`, threads, opt, l, u)
			path := filepath.Join(dir, "haproxy.cfg")
			return []string{"haproxy", "-db", "-f", path}, os.WriteFile(path, []byte(cfg), 0o644)
		}
	}
	return []relaySpec{
		{name: "direct (no relay)", kind: "direct"},
		{name: "sluice --loops 1", kind: "sluice", args: sluice("1")},
		{name: "sluice (default loops)", kind: "sluice", args: sluice("")},
		{name: "haproxy splice nbthread 1", kind: "haproxy", args: haproxy(1, true)},
		{name: "haproxy splice nbthread 2", kind: "haproxy", args: haproxy(2, true)},
		{name: "haproxy nbthread 1", kind: "haproxy", args: haproxy(1, false)},
		{name: "haproxy nbthread 2", kind: "haproxy", args: haproxy(2, false)},
		{name: "nginx stream, 1 worker", kind: "nginx", args: func(_ *bench, dir, l, u string) ([]string, error) {
			cfg := fmt.Sprintf(`load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
worker_processes 1;
worker_rlimit_nofile 19900;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log error;
events { worker_connections 19500; }
stream {
  server { listen %[2]s; proxy_pass %[3]s; proxy_timeout 1h; }
}
`, dir, l, u)
			path := filepath.Join(dir, "nginx.conf")
			return []string{"nginx", "-c", path, "-p", dir, "-e", dir + "/error.log"}, os.WriteFile(path, []byte(cfg), 0o644)
		}},
		{name: "socat (fork)", kind: "socat", args: func(_ *bench, _, l, u string) ([]string, error) {
			host, port, _ := net.SplitHostPort(l)
			return []string{"socat", fmt.Sprintf("TCP-LISTEN:%s,bind=%s,fork,reuseaddr,backlog=1024", port, host), "TCP:" + u}, nil
		}},
		{name: "plain Go io.Copy", kind: "go", args: func(b *bench, _, l, u string) ([]string, error) {
			return []string{b.self, "goproxy", "-listen", l, "-upstream", u}, nil
		}},
	}
}

// tuneSpecs are sluice's variants for the autotune figure: the fixed ones
// count as the "peers" to beat.
func tuneSpecs() []relaySpec {
	fixed := func(pipe string) func(*bench, string, string, string) ([]string, error) {
		return func(b *bench, _, l, u string) ([]string, error) {
			return []string{b.sluice, "forward", "--log-level", "warn", "--pipe-size", pipe, l, u}, nil
		}
	}
	return []relaySpec{
		{name: "sluice autotune (sluice run)", kind: "sluice", args: func(b *bench, dir, l, u string) ([]string, error) {
			cfg := fmt.Sprintf("config sluice 'main'\n\toption log_level 'warn'\n\toption control_socket '%s/ctl.sock'\n\nconfig forward 'bench'\n\toption listen '%s'\n\tlist upstream '%s'\n", dir, l, u)
			path := filepath.Join(dir, "sluice.conf")
			return []string{b.sluice, "run", "-c", path}, os.WriteFile(path, []byte(cfg), 0o644)
		}},
		{name: "sluice fixed 16 KiB pipes", kind: "fixed", args: fixed("16384")},
		{name: "sluice fixed 1 MiB pipes", kind: "fixed", args: fixed("1048576")},
	}
}

// running is a started relay.
type running struct {
	spec relaySpec
	addr string // where clients connect
	cmd  *exec.Cmd
	dir  string // scratch folder with its config and logs
}

// pid is the relay's process id, 0 for direct.
func (r *running) pid() int {
	if r.cmd == nil {
		return 0
	}
	return r.cmd.Process.Pid
}

// startRelay starts spec pinned to the relay CPU, listening on port and
// forwarding to upstream, and waits until it accepts connections.
func startRelay(b *bench, spec relaySpec, port int, upstream string) (*running, error) {
	if spec.kind == "direct" {
		return &running{spec: spec, addr: upstream}, nil
	}
	dir, err := os.MkdirTemp(b.tmp, "relay")
	if err != nil {
		return nil, err
	}
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	args, err := spec.args(b, dir, listen, upstream)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", spec.name, err)
	}
	cmd := exec.Command("taskset", append([]string{"-c", relayCPU}, args...)...)
	logf, err := os.Create(filepath.Join(dir, "stderr.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// Pdeathsig: a bench killed mid-run (Ctrl-C, a closed pipe) leaves
	// no relay holding its port.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.name, err)
	}
	r := &running{spec: spec, addr: listen, cmd: cmd, dir: dir}
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.DialTimeout("tcp", listen, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			r.stop()
			out, _ := os.ReadFile(logf.Name())
			return nil, fmt.Errorf("%s does not accept on %s: %s", spec.name, listen, strings.TrimSpace(string(out)))
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // let the accepted probe connection go
	return r, nil
}

// stop kills the relay's process group (socat's forks, nginx's worker).
func (r *running) stop() {
	if r.cmd == nil {
		return
	}
	syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
	r.cmd.Wait()
}
