package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// The rate figure (issue 8): sluice's rate classes measured. Ports
// 23000-23499 (helper B's): the proxy on rateProxyPort, the origin on
// rateOriginPort.
const (
	rateProxyPort  = 23400
	rateOriginPort = 23401
	// rateA and rateB are the configured down rates of classes a and b,
	// in bytes per second (10mbit and 20mbit).
	rateA = 1_250_000
	rateB = 2_500_000
)

// rateCase is one measured situation: downloads by user at once.
type rateCase struct {
	name      string
	downloads []string // the user of each parallel download
}

// rateFig measures the rate of downloads through `sluice run` with two
// classes: one download and 8 parallel downloads of one user, and two
// users in two classes at once. Each download's body is checked by
// sha256 against the origin's; the rate is a user's bytes over the time
// from the first request to the last byte.
func (b *bench) rateFig() error {
	dir, err := os.MkdirTemp(b.tmp, "rate")
	if err != nil {
		return err
	}
	stopOrigin, err := startRateOrigin()
	if err != nil {
		return err
	}
	defer stopOrigin()
	pid, stop, err := b.startRateProxy(dir)
	if err != nil {
		return err
	}
	defer stop()
	fmt.Fprintf(b.out, "# Rate classes\n\n`sluice run` with `config class 'a'` (rate_down '10mbit', %d bytes/s) and `config class 'b'` (rate_down '20mbit', %d bytes/s), user alice in a, bob in b; downloads of %s of the rate each through the proxy with Go's HTTP client, every body checked by sha256. Measured: a user's bytes / (last byte - first request), median of %d runs (min-max); error = measured / configured - 1; sluice CPU = its CPU time over the case's wall time, in %% of one core (waiting connections sleep on loop timers).\n\n",
		rateA, rateB, b.dur, b.reps)
	fmt.Fprintf(b.out, "| case | user | configured bytes/s | measured bytes/s | error | sluice CPU |\n|---|---|---|---|---|---|\n")
	cases := []rateCase{
		{"1 download", []string{"alice"}},
		{"8 parallel downloads", slices.Repeat([]string{"alice"}, 8)},
		{"2 users, 2 classes at once", []string{"alice", "bob"}},
	}
	for _, c := range cases {
		got := map[string][]float64{}
		var cpu []float64
		for range b.reps {
			before, start := cpuSeconds(pid), time.Now()
			rates, err := runRateCase(c, b.dur)
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			cpu = append(cpu, 100*(cpuSeconds(pid)-before)/time.Since(start).Seconds())
			for u, r := range rates {
				got[u] = append(got[u], r)
			}
		}
		for _, u := range []string{"alice", "bob"} {
			rs := got[u]
			if len(rs) == 0 {
				continue
			}
			want := float64(rateA)
			if u == "bob" {
				want = rateB
			}
			slices.Sort(rs)
			slices.Sort(cpu)
			med := rs[len(rs)/2]
			fmt.Fprintf(b.out, "| %s | %s | %.0f | %.0f (%.0f-%.0f) | %+.1f%% | %.1f%% |\n", c.name, u, want, med, rs[0], rs[len(rs)-1], 100*(med/want-1), cpu[len(cpu)/2])
		}
	}
	fmt.Fprintln(b.out)
	return nil
}

// runRateCase runs the downloads of c at once, each sized so that the
// user's share takes dur, and returns each user's measured rate.
func runRateCase(c rateCase, dur time.Duration) (map[string]float64, error) {
	per := map[string]int{}
	for _, u := range c.downloads {
		per[u]++
	}
	type result struct {
		user  string
		bytes int64
		end   time.Time
		err   error
	}
	res := make([]result, len(c.downloads))
	start := time.Now()
	var wg sync.WaitGroup
	for i, u := range c.downloads {
		rate := rateA
		if u == "bob" {
			rate = rateB
		}
		size := int(float64(rate)*dur.Seconds()) / per[u]
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := rateDownload(u, size)
			res[i] = result{user: u, bytes: n, end: time.Now(), err: err}
		}()
	}
	wg.Wait()
	bytesOf, endOf := map[string]int64{}, map[string]time.Time{}
	for _, r := range res {
		if r.err != nil {
			return nil, fmt.Errorf("%s: %w", r.user, r.err)
		}
		bytesOf[r.user] += r.bytes
		if r.end.After(endOf[r.user]) {
			endOf[r.user] = r.end
		}
	}
	rates := map[string]float64{}
	for u, n := range bytesOf {
		rates[u] = float64(n) / endOf[u].Sub(start).Seconds()
	}
	return rates, nil
}

// rateDownload fetches /bytes/size from the origin through the proxy as
// user and checks the body.
func rateDownload(user string, size int) (int64, error) {
	proxy := &url.URL{Scheme: "http", User: url.UserPassword(user, "pw"), Host: fmt.Sprintf("127.0.0.1:%d", rateProxyPort)}
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxy), DisableCompression: true}, Timeout: time.Minute}
	defer client.CloseIdleConnections()
	resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/bytes/%d", rateOriginPort, size))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return 0, fmt.Errorf("status %d", resp.StatusCode)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		return n, err
	}
	if want := sha256.Sum256(rateBody(size)); !bytes.Equal(h.Sum(nil), want[:]) || n != int64(size) {
		return n, fmt.Errorf("body of %d bytes differs from the origin's %d", n, size)
	}
	return n, nil
}

// rateBody is the origin's body of n bytes.
func rateBody(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

// startRateOrigin serves /bytes/N on rateOriginPort.
func startRateOrigin() (stop func(), err error) {
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", rateOriginPort))
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/bytes/"))
		if err != nil || n < 0 || n > 1<<30 {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(n))
		_, _ = w.Write(rateBody(n))
	})}
	go srv.Serve(ln)
	return func() { srv.Close() }, nil
}

// startRateProxy writes the config and starts `sluice run` on it; it
// returns sluice's pid once the proxy accepts.
func (b *bench) startRateProxy(dir string) (pid int, stop func(), err error) {
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		return 0, nil, err
	}
	conf := fmt.Sprintf(`config sluice 'main'
	option log_level 'warn'
	option control_socket '%[1]s/ctl.sock'

config class 'a'
	option rate_down '10mbit'

config class 'b'
	option rate_down '20mbit'

config user 'alice'
	option password '%[2]s'
	option class 'a'

config user 'bob'
	option password '%[2]s'
	option class 'b'

config http_proxy 'rate'
	option listen '127.0.0.1:%[3]d'
	option auth '1'
`, dir, hash, rateProxyPort)
	path := filepath.Join(dir, "sluice.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return 0, nil, err
	}
	cmd := exec.Command("taskset", "-c", relayCPU, b.sluice, "run", "-c", path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return 0, nil, err
	}
	stop = func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", rateProxyPort))
		if err == nil {
			c.Close()
			return cmd.Process.Pid, stop, nil // taskset execs sluice in place
		}
		if ctx.Err() != nil {
			stop()
			return 0, nil, errors.New("sluice run did not listen within 10 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
