package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The socks5 figure: sluice's SOCKS5 server against microsocks and dante
// (Debian's microsocks and dante-server packages), all pinned to the relay
// CPU, each taking one SOCKS5 port; the load (a small RFC 1928 client,
// `bench socks`) runs on the load CPU.

const (
	socksSourcePort = 21301 // bench source: sends its pattern forever
	socksEchoPort   = 21302 // bench echo
	socksPort       = 21310 // first proxy port
)

// socksSpecs are the SOCKS5 contenders, in table order.
func socksSpecs() []relaySpec {
	return []relaySpec{
		{name: "sluice socks5 --loops 1", kind: "sluice", args: func(b *bench, _, l, _ string) ([]string, error) {
			return []string{b.sluice, "socks5", "--log-level", "warn", "--loops", "1", l}, nil
		}},
		{name: "microsocks 1.0.3 (thread per client)", kind: "microsocks", args: func(_ *bench, _, l, _ string) ([]string, error) {
			host, port := splitAddr(l)
			return []string{"microsocks", "-i", host, "-p", port}, nil
		}},
		{name: "dante 1.4.2 (danted)", kind: "dante", args: func(_ *bench, dir, l, _ string) ([]string, error) {
			host, port := splitAddr(l)
			cfg := fmt.Sprintf(`logoutput: %s/danted.log
errorlog: stderr
internal: %s port = %s
external: 127.0.0.1
clientmethod: none
socksmethod: none
user.privileged: root
user.unprivileged: nobody
client pass { from: 0.0.0.0/0 to: 0.0.0.0/0 }
socks pass { from: 0.0.0.0/0 to: 0.0.0.0/0 }
`, dir, host, port)
			path := filepath.Join(dir, "danted.conf")
			return []string{"danted", "-f", path, "-p", filepath.Join(dir, "danted.pid")}, os.WriteFile(path, []byte(cfg), 0o644)
		}},
	}
}

// socksFig takes the SOCKS5 figures: one session's download throughput and
// the proxy's CPU per GB, the rate of handshake + connect + 64-byte echo +
// close with 32 concurrent clients, and RSS per idle session.
func (b *bench) socksFig() error {
	saved := b.specs
	b.specs = socksSpecs()
	defer func() { b.specs = saved }()
	src, err := b.background(b.self, "source", "-listen", fmt.Sprintf("127.0.0.1:%d", socksSourcePort))
	if err != nil {
		return err
	}
	defer func() { src.Process.Kill(); src.Wait() }()
	echo, err := b.background(b.self, "echo", "-listen", fmt.Sprintf("127.0.0.1:%d", socksEchoPort))
	if err != nil {
		return err
	}
	defer func() { echo.Process.Kill(); echo.Wait() }()
	gbps, cpu := newTable("Gbit/s", true), newTable("proxy CPU s/GB", false)
	cps, cerrs := newTable("sessions/s", true), newTable("errors", false)
	idleRSS, perIdle := newTable("idle process KiB", false), newTable("KiB per idle session", false)
	for range b.reps {
		for i, spec := range b.specs {
			r, err := startRelay(b, spec, socksPort+i, "")
			if err != nil {
				return err
			}
			err = b.socksRound(r, gbps, cpu, cps, cerrs, idleRSS, perIdle)
			r.stop()
			if err != nil {
				return fmt.Errorf("%s: %w", spec.name, err)
			}
			time.Sleep(time.Second) // let TIME_WAIT sockets settle
		}
	}
	b.print("SOCKS5: one session downloading (throughput, proxy CPU per GB)", gbps, cpu)
	b.print("SOCKS5: greeting + CONNECT + 64-byte echo + close, 32 concurrent clients", cps, cerrs)
	b.print(fmt.Sprintf("SOCKS5 memory: RSS of the idle process, and per idle session with %d sessions (a 64-byte echo each)", b.httpIdleN), idleRSS, perIdle)
	return nil
}

func (b *bench) socksRound(r *running, gbps, cpu, cps, cerrs, idleRSS, perIdle *table) error {
	base := memoryKiB(r.pid())
	idleRSS.add(r.spec, float64(base))
	n := strconv.Itoa(b.httpIdleN)
	cmd := exec.Command("taskset", "-c", loadCPU, b.self, "socks", "-mode", "hold", "-proxy", r.addr,
		"-target", fmt.Sprintf("127.0.0.1:%d", socksEchoPort), "-n", n)
	stdin, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	var held, failed int
	if _, err := fmt.Sscanf(line, "ready %d %d", &held, &failed); err != nil {
		stdin.Close()
		cmd.Wait()
		return fmt.Errorf("socks hold: %q", line)
	}
	time.Sleep(2 * time.Second)
	after := memoryKiB(r.pid())
	stdin.Close()
	cmd.Wait()
	if held > 0 {
		perIdle.add(r.spec, float64(after-base)/float64(held))
	}
	time.Sleep(500 * time.Millisecond)

	var res socksResult
	before := cpuSeconds(r.pid())
	if err := loadJSON(&res, "taskset", "-c", loadCPU, b.self, "socks", "-mode", "bulk", "-proxy", r.addr,
		"-target", fmt.Sprintf("127.0.0.1:%d", socksSourcePort), "-dur", b.dur.String()); err != nil {
		return err
	}
	gbps.add(r.spec, float64(res.Bytes)*8/res.Seconds/1e9)
	if res.Bytes > 0 {
		cpu.add(r.spec, (cpuSeconds(r.pid())-before)/(float64(res.Bytes)/1e9))
	}
	if err := loadJSON(&res, "taskset", "-c", loadCPU, b.self, "socks", "-mode", "rate", "-proxy", r.addr,
		"-target", fmt.Sprintf("127.0.0.1:%d", socksEchoPort), "-conc", "32", "-dur", b.dur.String()); err != nil {
		return err
	}
	cps.add(r.spec, float64(res.Sessions)/res.Seconds)
	cerrs.add(r.spec, float64(res.Errors))
	return nil
}

// socksResult is what `bench socks` prints.
type socksResult struct {
	Bytes    int64   `json:"bytes"`
	Sessions int64   `json:"sessions"`
	Errors   int64   `json:"errors"`
	Seconds  float64 `json:"seconds"`
}

// socksDial opens a SOCKS5 session to target the way RFC 1928 says: the
// greeting (no authentication), the method reply, the CONNECT request and
// its reply, one message at a time.
func socksDial(proxy string, target netip.AddrPort) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var buf [10]byte
	if _, err = c.Write([]byte{5, 1, 0}); err == nil {
		_, err = io.ReadFull(c, buf[:2])
	}
	if err == nil && buf[1] != 0 {
		err = fmt.Errorf("method %d", buf[1])
	}
	if err == nil {
		req := append([]byte{5, 1, 0, 1}, target.Addr().AsSlice()...)
		req = binary.BigEndian.AppendUint16(req, target.Port())
		if _, err = c.Write(req); err == nil {
			_, err = io.ReadFull(c, buf[:10])
		}
	}
	if err == nil && (buf[1] != 0 || buf[3] != 1) {
		err = fmt.Errorf("reply %v", buf)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// runSocks is the SOCKS5 load: -mode bulk reads from the source through
// one session for -dur; rate runs -conc clients doing greeting, CONNECT,
// a 64-byte echo and close for -dur; hold opens -n sessions with a 64-byte
// echo each, prints "ready HELD FAILED" and holds them until stdin closes.
func runSocks(args []string) error {
	fs := flag.NewFlagSet("socks", flag.ExitOnError)
	mode := fs.String("mode", "bulk", "bulk, rate or hold")
	proxy := fs.String("proxy", "", "SOCKS5 server")
	targetS := fs.String("target", "", "target address (IPv4:port)")
	dur := fs.Duration("dur", 3*time.Second, "duration")
	conc := fs.Int("conc", 32, "concurrent clients (rate)")
	n := fs.Int("n", 2000, "sessions (hold)")
	fs.Parse(args)
	target, err := netip.ParseAddrPort(*targetS)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(os.Stdout)
	switch *mode {
	case "bulk":
		c, err := socksDial(*proxy, target)
		if err != nil {
			return err
		}
		defer c.Close()
		start := time.Now()
		c.SetReadDeadline(start.Add(*dur))
		buf := make([]byte, 256<<10)
		var total int64
		for {
			k, err := c.Read(buf)
			total += int64(k)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break
				}
				return err
			}
		}
		return enc.Encode(socksResult{Bytes: total, Seconds: time.Since(start).Seconds()})
	case "rate":
		var done, errs atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		deadline := start.Add(*dur)
		for range *conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				msg, got := make([]byte, 64), make([]byte, 64)
				for time.Now().Before(deadline) {
					c, err := socksDial(*proxy, target)
					if err == nil {
						c.SetDeadline(time.Now().Add(2 * time.Second))
						if _, err = c.Write(msg); err == nil {
							_, err = io.ReadFull(c, got)
						}
						c.Close()
					}
					if err != nil {
						errs.Add(1)
						continue
					}
					done.Add(1)
				}
			}()
		}
		wg.Wait()
		return enc.Encode(socksResult{Sessions: done.Load(), Errors: errs.Load(), Seconds: time.Since(start).Seconds()})
	case "hold":
		var conns []net.Conn
		failed := 0
		msg, got := make([]byte, 64), make([]byte, 64)
		for range *n {
			c, err := socksDial(*proxy, target)
			if err == nil {
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err = c.Write(msg); err == nil {
					_, err = io.ReadFull(c, got)
				}
				if err != nil {
					c.Close()
				}
			}
			if err != nil {
				failed++
				continue
			}
			conns = append(conns, c)
		}
		fmt.Printf("ready %d %d\n", len(conns), failed)
		io.Copy(io.Discard, os.Stdin)
		for _, c := range conns {
			c.Close()
		}
		return nil
	}
	return fmt.Errorf("unknown mode %q", *mode)
}
