// Command bench runs sluice and its peers (HAProxy, nginx stream, socat and
// a plain-Go io.Copy proxy; squid and tinyproxy for the HTTP proxy figures)
// side by side on loopback and prints markdown
// tables with every figure as a median of repeated runs and ratios against
// the direct connection and the best peer. `make bench` runs it.
//
// The relay runs pinned to CPU 0; load generators and backends to CPU 1.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 {
		sub := map[string]func([]string) error{
			"echo": runEcho, "pingpong": runPingPong, "connrate": runConnRate,
			"hold": runHold, "goproxy": runGoProxy,
			"httporigin": runOrigin, "source": runSource, "httpload": runHTTPLoad,
			"tunnel": runTunnel, "httphold": runHTTPHold, "burst": runBurst, "socks": runSocks,
		}[os.Args[1]]
		if sub != nil {
			if err := sub(os.Args[2:]); err != nil {
				fmt.Fprintln(os.Stderr, "bench:", err)
				os.Exit(1)
			}
			return
		}
	}
	if err := runBench(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// bench holds what every measurement needs.
type bench struct {
	sluice string // path of the sluice binary
	self   string // path of this binary, for its subcommands
	dist   string // folder of cross-built binaries, for the size table
	tmp    string
	reps   int
	dur    time.Duration
	idleN  int
	// httpIdleN is how many idle keep-alive clients, then tunnels, the
	// HTTP proxy memory figure holds.
	httpIdleN int
	only      map[string]bool
	out       io.Writer
	specs     []relaySpec
	// tuneRun is set while the autotune figure reuses the others with
	// sluice's variants only and fewer workloads.
	tuneRun bool
}

func runBench(args []string) error {
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	b := &bench{}
	fs.StringVar(&b.sluice, "sluice", "bin/sluice", "sluice binary")
	fs.StringVar(&b.dist, "dist", "dist", "folder of cross-built binaries (size table)")
	fs.IntVar(&b.reps, "reps", 3, "repetitions of every figure")
	fs.DurationVar(&b.dur, "dur", 3*time.Second, "duration of each timed run")
	fs.IntVar(&b.idleN, "idle", 9000, "idle relayed connections for the memory figure")
	fs.IntVar(&b.httpIdleN, "http-idle", 2000, "idle keep-alive clients and tunnels for the HTTP proxy memory figure")
	figs := fs.String("figures", "bulk,pingpong,connrate,idle,size,tune,http,cache,rate,socks5", "figures to take")
	outPath := fs.String("out", "", "also write the markdown here")
	fs.Parse(args)
	b.only = map[string]bool{}
	for _, f := range strings.Split(*figs, ",") {
		b.only[f] = true
	}
	var err error
	if b.sluice, err = filepath.Abs(b.sluice); err != nil {
		return err
	}
	if b.self, err = os.Executable(); err != nil {
		return err
	}
	if err := checkTools(b.only); err != nil {
		return err
	}
	b.tmp, err = os.MkdirTemp("", "sluice-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(b.tmp)
	b.out = os.Stdout
	if *outPath != "" {
		f, err := os.Create(*outPath)
		if err != nil {
			return err
		}
		defer f.Close()
		b.out = io.MultiWriter(os.Stdout, f)
	}
	b.specs = relaySpecs()
	fmt.Fprintf(b.out, "# sluice benchmark\n\n%s; %d runs per figure (median, min-max), %s per timed run; relay on CPU %s, load and backends on CPU %s.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), b.reps, b.dur, relayCPU, loadCPU)
	for _, fig := range []struct {
		name string
		run  func() error
	}{
		{"bulk", b.bulk}, {"pingpong", b.pingpong}, {"connrate", b.connRate}, {"idle", b.idle}, {"size", b.size},
		{"tune", b.tune}, {"http", b.httpFig}, {"cache", b.cacheFig}, {"rate", b.rateFig}, {"socks5", b.socksFig},
	} {
		if b.only[fig.name] {
			if err := fig.run(); err != nil {
				return fmt.Errorf("%s: %w", fig.name, err)
			}
		}
	}
	return nil
}

// checkTools says what to install when a peer is missing.
func checkTools(only map[string]bool) error {
	var missing []string
	tools := []string{"taskset"}
	relayPeers := false // the SOCKS5 figure alone needs none of the relay peers
	for f := range only {
		relayPeers = relayPeers || f != "socks5"
	}
	if relayPeers {
		tools = append(tools, "haproxy", "nginx", "socat", "iperf3")
	}
	if only["http"] || only["cache"] {
		tools = append(tools, "squid", "tinyproxy")
	}
	if only["socks5"] {
		tools = append(tools, "microsocks", "danted")
	}
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	if _, err := os.Stat("/usr/lib/nginx/modules/ngx_stream_module.so"); err != nil && relayPeers {
		missing = append(missing, "nginx stream module")
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s: run `make bench` (it installs haproxy nginx-light libnginx-mod-stream socat iperf3 squid tinyproxy util-linux) or apt-get install them", strings.Join(missing, ", "))
	}
	return nil
}

// background starts a helper pinned to the load CPU and waits for "ready".
func (b *bench) background(args ...string) (*exec.Cmd, error) {
	cmd := exec.Command("taskset", append([]string{"-c", loadCPU}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	if args[0] == "iperf3" {
		time.Sleep(500 * time.Millisecond)
		go io.Copy(io.Discard, out)
		return cmd, nil
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready") {
		cmd.Process.Kill()
		return nil, fmt.Errorf("%s did not start: %q %v", args[0], line, err)
	}
	return cmd, nil
}

// Relay i listens on port relayPort+i. Echo backends listen on echoPort+i,
// one port per relay, so one relay's TIME_WAIT sockets towards its backend
// never use up the ephemeral ports another relay needs.
const (
	relayPort = 21100
	echoPort  = 21200
	iperfPort = "21001"
)

// echoAddrs lists the echo backend's addresses, one per relay.
func (b *bench) echoAddrs() string {
	var a []string
	for i := range b.specs {
		a = append(a, fmt.Sprintf("127.0.0.1:%d", echoPort+i))
	}
	return strings.Join(a, ",")
}

// startEcho starts the echo backend on every relay's backend port.
func (b *bench) startEcho() (*exec.Cmd, error) {
	return b.background(b.self, "echo", "-listen", b.echoAddrs())
}

// startAll starts every relay towards upstream(i) on consecutive ports.
func (b *bench) startAll(upstream func(i int) string) ([]*running, error) {
	var rs []*running
	for i, spec := range b.specs {
		r, err := startRelay(b, spec, relayPort+i, upstream(i))
		if err != nil {
			stopAll(rs)
			return nil, err
		}
		rs = append(rs, r)
	}
	return rs, nil
}

func stopAll(rs []*running) {
	for _, r := range rs {
		r.stop()
	}
}

// loadJSON runs a load generator pinned to the load CPU and decodes its JSON.
func loadJSON(v any, args ...string) error {
	cmd := exec.Command("taskset", append([]string{"-c", loadCPU}, args...)...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("%s: %w", strings.Join(args, " "), err)
	}
	return json.Unmarshal(out, v)
}

// iperfResult is the part of iperf3 -J output the bench reads.
type iperfResult struct {
	End struct {
		SumReceived struct {
			Bytes         float64 `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
}

func (b *bench) bulk() error {
	srv, err := b.background("iperf3", "-s", "-p", iperfPort)
	if err != nil {
		return err
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	rs, err := b.startAll(func(int) string { return "127.0.0.1:" + iperfPort })
	if err != nil {
		return err
	}
	defer stopAll(rs)
	secs := strconv.Itoa(int(b.dur.Seconds()))
	tests := []struct{ title, flags string }{
		{"1 stream", ""}, {"8 streams", "-P 8"}, {"1 stream, reverse (upstream to client)", "-R"},
	}
	if b.tuneRun {
		tests = tests[:1]
	}
	for _, test := range tests {
		gbps := newTable("Gbit/s", true)
		cpu := newTable("relay CPU s/GB", false)
		for range b.reps {
			for _, r := range rs {
				host, port := splitAddr(r.addr)
				args := []string{"iperf3", "-c", host, "-p", port, "-t", secs, "-J"}
				args = append(args, strings.Fields(test.flags)...)
				var res iperfResult
				before := 0.0
				if r.pid() != 0 {
					before = cpuSeconds(r.pid())
				}
				if err := loadJSON(&res, args...); err != nil {
					return fmt.Errorf("%s: %w", r.spec.name, err)
				}
				gbps.add(r.spec, res.End.SumReceived.BitsPerSecond/1e9)
				if r.pid() != 0 && res.End.SumReceived.Bytes > 0 {
					cpu.add(r.spec, (cpuSeconds(r.pid())-before)/(res.End.SumReceived.Bytes/1e9))
				}
			}
		}
		b.print("Bulk throughput, iperf3, "+test.title, gbps, cpu)
	}
	return nil
}

func (b *bench) pingpong() error {
	echo, err := b.startEcho()
	if err != nil {
		return err
	}
	defer func() { echo.Process.Kill(); echo.Wait() }()
	rs, err := b.startAll(func(i int) string { return fmt.Sprintf("127.0.0.1:%d", echoPort+i) })
	if err != nil {
		return err
	}
	defer stopAll(rs)
	conns := []int{1, 64}
	if b.tuneRun {
		conns = conns[:1]
	}
	for _, conns := range conns {
		rps, p50, p99, p999 := newTable("requests/s", true), newTable("p50 us", false), newTable("p99 us", false), newTable("p999 us", false)
		for range b.reps {
			for _, r := range rs {
				var res pingResult
				if err := loadJSON(&res, b.self, "pingpong", "-addr", r.addr, "-conns", strconv.Itoa(conns), "-dur", b.dur.String()); err != nil {
					return fmt.Errorf("%s: %w", r.spec.name, err)
				}
				rps.add(r.spec, res.RPS)
				p50.add(r.spec, res.P50)
				p99.add(r.spec, res.P99)
				p999.add(r.spec, res.P999)
			}
		}
		b.print(fmt.Sprintf("64-byte ping-pong, %d connection(s)", conns), rps, p50, p99, p999)
	}
	return nil
}

func (b *bench) connRate() error {
	echo, err := b.startEcho()
	if err != nil {
		return err
	}
	defer func() { echo.Process.Kill(); echo.Wait() }()
	rs, err := b.startAll(func(i int) string { return fmt.Sprintf("127.0.0.1:%d", echoPort+i) })
	if err != nil {
		return err
	}
	defer stopAll(rs)
	cps, errs := newTable("connections/s", true), newTable("errors", false)
	for range b.reps {
		for _, r := range rs {
			var res rateResult
			if err := loadJSON(&res, b.self, "connrate", "-addr", r.addr, "-conc", "32", "-dur", b.dur.String()); err != nil {
				return fmt.Errorf("%s: %w", r.spec.name, err)
			}
			cps.add(r.spec, res.CPS)
			errs.add(r.spec, float64(res.Errors))
		}
		time.Sleep(time.Second) // let TIME_WAIT sockets settle between rounds
	}
	b.print("Connection rate: connect, 64-byte echo, close; 32 concurrent", cps, errs)
	return nil
}

// idle measures wake-ups with no connections (all relays at once, fresh),
// then per relay the RSS of the idle process and per idle connection.
func (b *bench) idle() error {
	echo, err := b.startEcho()
	if err != nil {
		return err
	}
	defer func() { echo.Process.Kill(); echo.Wait() }()
	wake := newTable("wake-ups/s", false)
	idleRSS := newTable("idle process KiB", false)
	perConn := newTable("KiB per connection", false)
	fds := newTable("connections held", true)
	for range b.reps {
		rs, err := b.startAll(func(i int) string { return fmt.Sprintf("127.0.0.1:%d", echoPort+i) })
		if err != nil {
			return err
		}
		time.Sleep(2 * time.Second)
		before := map[int]int64{}
		for _, r := range rs {
			if r.pid() != 0 {
				before[r.pid()] = contextSwitches(r.pid())
			}
		}
		const window = 10 * time.Second
		time.Sleep(window)
		for _, r := range rs {
			if r.pid() != 0 {
				wake.add(r.spec, float64(contextSwitches(r.pid())-before[r.pid()])/window.Seconds())
			}
		}
		for _, r := range rs {
			if r.pid() == 0 {
				continue
			}
			n := b.idleN
			if r.spec.kind == "go" {
				n = min(n, 3000) // 6 fds per connection: 9,000 would pass the 20,000 fd limit
			}
			base := memoryKiB(r.pid())
			idleRSS.add(r.spec, float64(base))
			hold := exec.Command("taskset", "-c", loadCPU, b.self, "hold", "-addr", r.addr, "-n", strconv.Itoa(n))
			stdin, _ := hold.StdinPipe()
			out, _ := hold.StdoutPipe()
			hold.Stderr = os.Stderr
			if err := hold.Start(); err != nil {
				stopAll(rs)
				return err
			}
			line, _ := bufio.NewReader(out).ReadString('\n')
			var held, failed int
			fmt.Sscanf(line, "ready %d %d", &held, &failed)
			time.Sleep(2 * time.Second)
			after := memoryKiB(r.pid())
			if held > 0 {
				perConn.add(r.spec, float64(after-base)/float64(held))
			}
			fds.add(r.spec, float64(held))
			stdin.Close()
			hold.Wait()
		}
		stopAll(rs)
	}
	b.print("Idle: wake-ups per second over 10 s with no connections (context switches of all threads)", wake)
	b.print(fmt.Sprintf("Memory: RSS (summed PSS for relays of several processes) of the idle process, and per idle relayed connection with %d connections (the Go baseline holds 3,000: it needs 6 fds per connection and the fd limit is 20,000)", b.idleN), idleRSS, perConn, fds)
	return nil
}

// tune compares sluice with its tuner on (`sluice run`, autotune is the
// default) against fixed small and fixed large pipes, on bulk, 64-byte
// ping-pong and idle-memory workloads.
func (b *bench) tune() error {
	saved := b.specs
	defer func() { b.specs, b.tuneRun = saved, false }()
	b.specs, b.tuneRun = tuneSpecs(), true
	fmt.Fprintf(b.out, "# Autotune on and off\n\nsluice only: `sluice run` with autotune on (the default) against `sluice forward` with fixed small (16 KiB) and fixed large (1 MiB) pipes; \"best peer\" below means the best fixed setting.\n\n")
	for _, f := range []func() error{b.bulk, b.pingpong, b.idle} {
		if err := f(); err != nil {
			return err
		}
	}
	return nil
}

func (b *bench) size() error {
	files, _ := filepath.Glob(filepath.Join(b.dist, "sluice-linux-*"))
	if len(files) == 0 {
		return fmt.Errorf("no binaries in %s: run `make cross` first", b.dist)
	}
	fmt.Fprintf(b.out, "## Binary size (static, stripped: `make size`)\n\n| binary | bytes | MB |\n|---|---:|---:|\n")
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			return err
		}
		fmt.Fprintf(b.out, "| %s | %d | %.2f |\n", filepath.Base(f), st.Size(), float64(st.Size())/1e6)
	}
	fmt.Fprintln(b.out)
	return nil
}

func splitAddr(a string) (string, string) {
	i := strings.LastIndexByte(a, ':')
	return a[:i], a[i+1:]
}

// table collects repeated samples of one metric per relay.
type table struct {
	metric       string
	higherBetter bool
	samples      map[string][]float64
}

func newTable(metric string, higherBetter bool) *table {
	return &table{metric: metric, higherBetter: higherBetter, samples: map[string][]float64{}}
}

func (t *table) add(r relaySpec, v float64) { t.samples[r.name] = append(t.samples[r.name], v) }

// stats returns median, min and max.
func (t *table) stats(name string) (med, lo, hi float64, ok bool) {
	s := slices.Clone(t.samples[name])
	if len(s) == 0 {
		return 0, 0, 0, false
	}
	slices.Sort(s)
	return s[len(s)/2], s[0], s[len(s)-1], true
}

func (t *table) better(a, b float64) bool {
	if t.higherBetter {
		return a > b
	}
	return a < b
}

// print writes one markdown table per metric with ratios to direct and to
// the best peer.
func (b *bench) print(title string, tables ...*table) {
	fmt.Fprintf(b.out, "## %s\n\n", title)
	for _, t := range tables {
		bestName, best := "", 0.0
		for _, s := range b.specs {
			if m, _, _, ok := t.stats(s.name); ok && s.isPeer() && (bestName == "" || t.better(m, best)) {
				bestName, best = s.name, m
			}
		}
		direct, _, _, hasDirect := t.stats("direct (no relay)")
		dir := "higher is better"
		if !t.higherBetter {
			dir = "lower is better"
		}
		fmt.Fprintf(b.out, "%s (%s; best peer: %s)\n\n| relay | %s median | min-max | x direct | x best peer |\n|---|---:|---:|---:|---:|\n", t.metric, dir, bestName, t.metric)
		for _, s := range b.specs {
			m, lo, hi, ok := t.stats(s.name)
			if !ok {
				continue
			}
			xd, xb := "", ""
			if hasDirect && direct != 0 {
				xd = fmt.Sprintf("%.2f", m/direct)
			}
			if best != 0 {
				xb = fmt.Sprintf("%.2f", m/best)
			}
			fmt.Fprintf(b.out, "| %s | %s | %s-%s | %s | %s |\n", s.name, num(m), num(lo), num(hi), xd, xb)
		}
		fmt.Fprintln(b.out)
	}
}

func num(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}
