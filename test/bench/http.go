package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The HTTP proxy figures (issue 7) and the cache figure (issue 8): sluice's
// HTTP proxy against squid and tinyproxy. Ports 22000-22999.
const (
	httpOriginPort = 22000 // the origin (`bench httporigin`)
	httpSourcePort = 22001 // the bulk source behind CONNECT tunnels
	httpEchoPort   = 22002 // the echo server behind idle tunnels
	httpProxyPort  = 22100 // proxy i listens on httpProxyPort+i
	httpBodySize   = 100   // bytes of every origin response body
	httpClients    = 32    // keep-alive clients of the GET figures
	cacheObjects   = 100   // distinct objects of the cache figure
	burstClients   = 32    // clients asking at once for one uncached object
)

var (
	httpOrigin = fmt.Sprintf("127.0.0.1:%d", httpOriginPort)
	httpSource = fmt.Sprintf("127.0.0.1:%d", httpSourcePort)
	httpEcho   = fmt.Sprintf("127.0.0.1:%d", httpEchoPort)
)

// httpSpecs lists the HTTP proxies; with cache they cache in memory
// (squid's cache_mem, sluice's cache_size), else they do not cache.
func httpSpecs(cache bool) []relaySpec {
	sluice := func(loops string) func(*bench, string, string, string) ([]string, error) {
		return func(b *bench, _, l, _ string) ([]string, error) {
			args := []string{b.sluice, "http-proxy", "--log-level", "warn",
				"--connect-port", strconv.Itoa(httpSourcePort), "--connect-port", strconv.Itoa(httpEchoPort)}
			if loops != "" {
				args = append(args, "--loops", loops)
			}
			return append(args, l), nil
		}
	}
	squid := relaySpec{name: "squid", kind: "squid", args: func(_ *bench, dir, l, _ string) ([]string, error) {
		path, err := writeSquidConf(dir, l, cache)
		return []string{"squid", "-N", "-f", path}, err
	}}
	if cache {
		squid.name = "squid (cache_mem 64 MB, collapsed_forwarding on)"
		return []relaySpec{
			{name: "direct (no proxy)", kind: "direct"},
			{name: "sluice run (cache_size 64M)", kind: "sluice", args: func(b *bench, dir, l, _ string) ([]string, error) {
				path, err := writeSluiceCacheConf(dir, l)
				return []string{b.sluice, "run", "-c", path}, err
			}},
			squid,
		}
	}
	squid.name = "squid (cache deny all)"
	return []relaySpec{
		{name: "direct (no proxy)", kind: "direct"},
		{name: "sluice http-proxy --loops 1", kind: "sluice", args: sluice("1")},
		{name: "sluice http-proxy (default loops: 1 on one CPU)", kind: "sluice", args: sluice("")},
		squid,
		{name: "tinyproxy", kind: "tinyproxy", args: func(_ *bench, dir, l, _ string) ([]string, error) {
			host, port, _ := net.SplitHostPort(l)
			conf := fmt.Sprintf("Port %s\nListen %s\nTimeout 600\nMaxClients 4500\nAllow 127.0.0.1\nConnectPort %d\nConnectPort %d\nLogLevel Critical\nLogFile %q\n",
				port, host, httpSourcePort, httpEchoPort, filepath.Join(dir, "tinyproxy.log"))
			path := filepath.Join(dir, "tinyproxy.conf")
			return []string{"tinyproxy", "-d", "-c", path}, os.WriteFile(path, []byte(conf), 0o644)
		}},
	}
}

// writeSquidConf writes a squid.conf for one foreground squid (`-N`):
// everything in dir, which squid's unprivileged user must be able to
// write; CONNECT allowed to any port from loopback (squid's shipped
// config limits it to 443, ours has no such rule); no access log, as
// sluice and tinyproxy run without one.
func writeSquidConf(dir, listen string, cache bool) (string, error) {
	if err := os.Chmod(dir, 0o777); err != nil {
		return "", err
	}
	cacheConf := "cache deny all\ncache_mem 8 MB\n"
	if cache {
		cacheConf = "cache allow all\ncache_mem 64 MB\nmaximum_object_size_in_memory 1 MB\ncollapsed_forwarding on\n"
	}
	conf := fmt.Sprintf(`http_port %[2]s
visible_hostname sluice-bench
pid_filename %[1]s/squid.pid
cache_log %[1]s/cache.log
coredump_dir %[1]s
access_log none
cache_store_log none
netdb_filename none
pinger_enable off
logfile_rotate 0
shutdown_lifetime 1 seconds
max_filedescriptors 16384
workers 1
acl bench src 127.0.0.0/8
http_access allow bench
http_access deny all
%[3]s`, dir, listen, cacheConf)
	path := filepath.Join(dir, "squid.conf")
	return path, os.WriteFile(path, []byte(conf), 0o644)
}

// writeSluiceCacheConf writes a config with one caching http_proxy.
func writeSluiceCacheConf(dir, listen string) (string, error) {
	conf := fmt.Sprintf(`config sluice 'main'
	option log_level 'warn'
	option control_socket '%s/ctl.sock'

config http_proxy 'bench'
	option listen '%s'
	option cache_size '64M'
	option cache_max_object '1M'
	list connect_port '%d'
`, dir, listen, httpSourcePort)
	path := filepath.Join(dir, "sluice.conf")
	return path, os.WriteFile(path, []byte(conf), 0o644)
}

// sluiceCaches says whether this sluice knows the cache options: `sluice
// check` on the cache config, and its complaint when it does not.
func (b *bench) sluiceCaches() (bool, string) {
	dir, err := os.MkdirTemp(b.tmp, "check")
	if err != nil {
		return false, err.Error()
	}
	path, err := writeSluiceCacheConf(dir, "127.0.0.1:22999")
	if err != nil {
		return false, err.Error()
	}
	out, err := exec.Command(b.sluice, "check", "-c", path).CombinedOutput()
	if err != nil {
		return false, strings.TrimSpace(string(out))
	}
	return true, ""
}

// startHTTPServers starts the origin, the bulk source and the echo server.
func (b *bench) startHTTPServers() (stop func(), err error) {
	var cmds []*exec.Cmd
	stop = func() {
		for _, c := range cmds {
			c.Process.Kill()
			c.Wait()
		}
	}
	for _, args := range [][]string{
		{b.self, "httporigin", "-listen", httpOrigin, "-size", strconv.Itoa(httpBodySize)},
		{b.self, "source", "-listen", httpSource},
		{b.self, "echo", "-listen", httpEcho},
	} {
		c, err := b.background(args...)
		if err != nil {
			stop()
			return nil, err
		}
		cmds = append(cmds, c)
	}
	return stop, nil
}

// startProxies starts every spec in b.specs on consecutive ports and
// checks that each really proxies.
func (b *bench) startProxies() ([]*running, error) {
	var rs []*running
	for i, spec := range b.specs {
		r, err := startRelay(b, spec, httpProxyPort+i, httpOrigin)
		if err == nil {
			err = checkProxy(r)
		}
		if err != nil {
			if r != nil {
				r.stop()
			}
			stopAll(rs)
			return nil, err
		}
		rs = append(rs, r)
	}
	return rs, nil
}

// proxyAddr is where the load connects for a GET through r, and whether
// that is the origin itself.
func proxyAddr(r *running) (string, bool) { return r.addr, r.spec.kind == "direct" }

// checkProxy makes sure r really proxies before anything is measured: a
// GET answered 200 with the origin's exact body (sha256), and a CONNECT
// tunnel that delivers the source's first 4 MiB intact.
func checkProxy(r *running) error {
	addr, direct := proxyAddr(r)
	fail := func(err error) error {
		msg := fmt.Sprintf("%s does not proxy: %v", r.spec.name, err)
		if r.dir != "" {
			for _, f := range []string{"cache.log", "stderr.log", "tinyproxy.log"} {
				if out, _ := os.ReadFile(filepath.Join(r.dir, f)); len(out) > 0 {
					msg += fmt.Sprintf("\n%s:\n%s", f, tail(out, 2000))
				}
			}
		}
		return fmt.Errorf("%s", msg)
	}
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return fail(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(getRequest(httpOrigin, "/check", direct)); err != nil {
		return fail(err)
	}
	status, body, _, err := readResponse(bufio.NewReader(c), nil)
	if err != nil {
		return fail(err)
	}
	if status != 200 || sha256.Sum256(body) != sha256.Sum256(originBody(httpBodySize)) {
		return fail(fmt.Errorf("GET: status %d, body %q", status, tail(body, 200)))
	}
	proxy := addr
	if direct {
		proxy = ""
	}
	tc, tr, err := dialTunnel(proxy, httpSource)
	if err != nil {
		return fail(err)
	}
	defer tc.Close()
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	const n = 4 << 20
	h := sha256.New()
	if _, err := io.CopyN(h, tr, n); err != nil {
		return fail(fmt.Errorf("CONNECT: %w", err))
	}
	if [32]byte(h.Sum(nil)) != sourceSum(n) {
		return fail(fmt.Errorf("CONNECT: the tunnel's bytes differ from the source's"))
	}
	return nil
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(bytes.TrimSpace(b))
}

// httpFig takes the HTTP proxy figures: GET requests/s and latency with
// 32 keep-alive clients, CONNECT throughput and CPU per GB, and memory
// per idle keep-alive connection and per idle tunnel.
func (b *bench) httpFig() error {
	saved := b.specs
	defer func() { b.specs = saved }()
	b.specs = httpSpecs(false)
	stopServers, err := b.startHTTPServers()
	if err != nil {
		return err
	}
	defer stopServers()
	fmt.Fprintf(b.out, "# HTTP proxy\n\nsluice's HTTP proxy against squid (%s) and tinyproxy (%s), none caching and none logging requests. Origin: `bench httporigin`, %d-byte bodies; every proxy's GET (status 200, body sha256) and CONNECT (4 MiB sha256) are checked before measuring.\n\n",
		firstLine("squid", "-v"), firstLine("tinyproxy", "-v"), httpBodySize)
	rs, err := b.startProxies()
	if err != nil {
		return err
	}
	rps, p50, p99, errs := newTable("requests/s", true), newTable("p50 us", false), newTable("p99 us", false), newTable("errors", false)
	cpuReq := newTable("proxy CPU us per request", false)
	for range b.reps {
		for _, r := range rs {
			addr, direct := proxyAddr(r)
			var res httpLoadResult
			before := cpuSeconds(r.pid())
			if err := loadJSON(&res, b.self, "httpload", "-addr", addr, "-origin", httpOrigin, "-direct="+strconv.FormatBool(direct),
				"-conns", strconv.Itoa(httpClients), "-dur", b.dur.String(), "-size", strconv.Itoa(httpBodySize)); err != nil {
				stopAll(rs)
				return fmt.Errorf("%s: %w", r.spec.name, err)
			}
			rps.add(r.spec, res.RPS)
			p50.add(r.spec, res.P50)
			p99.add(r.spec, res.P99)
			errs.add(r.spec, float64(res.Errors))
			if r.pid() != 0 && res.Requests > 0 {
				cpuReq.add(r.spec, (cpuSeconds(r.pid())-before)*1e6/float64(res.Requests))
			}
		}
	}
	b.print(fmt.Sprintf("HTTP GET, %d keep-alive clients, %d-byte bodies, not cached", httpClients, httpBodySize), rps, p50, p99, errs, cpuReq)
	for _, conns := range []int{1, 8} {
		gbps, cpu := newTable("Gbit/s", true), newTable("proxy CPU s/GB", false)
		for range b.reps {
			for _, r := range rs {
				proxy, direct := proxyAddr(r)
				if direct {
					proxy = ""
				}
				var res tunnelResult
				before := cpuSeconds(r.pid())
				if err := loadJSON(&res, b.self, "tunnel", "-proxy", proxy, "-target", httpSource, "-conns", strconv.Itoa(conns), "-dur", b.dur.String()); err != nil {
					stopAll(rs)
					return fmt.Errorf("%s: %w", r.spec.name, err)
				}
				gbps.add(r.spec, res.Gbps)
				if r.pid() != 0 && res.Bytes > 0 {
					cpu.add(r.spec, (cpuSeconds(r.pid())-before)/(float64(res.Bytes)/1e9))
				}
			}
		}
		b.print(fmt.Sprintf("CONNECT tunnel throughput, %d tunnel(s), origin to client", conns), gbps, cpu)
	}
	stopAll(rs)
	return b.httpIdle()
}

// httpIdle measures RSS per idle keep-alive client connection (after two
// GETs each) and per idle CONNECT tunnel (after a 64-byte echo through
// each), each on freshly started proxies: memory the first phase freed
// must not pass for the second's.
func (b *bench) httpIdle() error {
	saved := b.specs
	b.specs = b.specs[1:] // no direct row
	defer func() { b.specs = saved }()
	idleRSS := newTable("idle process KiB", false)
	perGet, perTunnel := newTable("KiB per idle keep-alive client", false), newTable("KiB per idle CONNECT tunnel", false)
	heldGet, heldTunnel := newTable("keep-alive clients held", true), newTable("tunnels held", true)
	for range b.reps {
		for _, m := range []struct {
			mode      string
			per, held *table
		}{{"get", perGet, heldGet}, {"connect", perTunnel, heldTunnel}} {
			rs, err := b.startProxies()
			if err != nil {
				return err
			}
			for _, r := range rs {
				base := memoryKiB(r.pid())
				if m.mode == "get" {
					idleRSS.add(r.spec, float64(base))
				}
				held, release, err := b.hold(r.addr, m.mode)
				if err != nil {
					stopAll(rs)
					return fmt.Errorf("%s: %w", r.spec.name, err)
				}
				time.Sleep(2 * time.Second)
				after := memoryKiB(r.pid())
				release()
				if held > 0 {
					m.per.add(r.spec, float64(after-base)/float64(held))
				}
				m.held.add(r.spec, float64(held))
			}
			stopAll(rs)
		}
	}
	b.print(fmt.Sprintf("HTTP proxy memory: RSS of the idle process (after one checked GET and CONNECT), and per idle connection with %d keep-alive clients (two GETs each), then, on a fresh process, %d CONNECT tunnels (a 64-byte echo each)", b.httpIdleN, b.httpIdleN),
		idleRSS, perGet, perTunnel, heldGet, heldTunnel)
	return nil
}

// hold starts `bench httphold` against proxy and returns once its
// connections are open; release closes them.
func (b *bench) hold(proxy, mode string) (int, func(), error) {
	cmd := exec.Command("taskset", "-c", loadCPU, b.self, "httphold", "-proxy", proxy, "-mode", mode,
		"-origin", httpOrigin, "-echo", httpEcho, "-n", strconv.Itoa(b.httpIdleN))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 0, nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return 0, nil, err
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	var held, failed int
	if _, err := fmt.Sscanf(line, "ready %d %d", &held, &failed); err != nil {
		stdin.Close()
		cmd.Wait()
		return 0, nil, fmt.Errorf("httphold %s: %q", mode, line)
	}
	return held, func() { stdin.Close(); cmd.Wait() }, nil
}

// cacheFig takes the cache figure: GET requests/s and p99 of cache hits
// (100 objects, all cached first) and how many requests reach the origin
// when 32 clients ask for one uncached object at once.
func (b *bench) cacheFig() error {
	saved := b.specs
	defer func() { b.specs = saved }()
	b.specs = httpSpecs(true)
	fmt.Fprintf(b.out, "# HTTP cache\n\nsluice's memory cache against squid's (%s) memory cache; origin responses carry `Cache-Control: public, max-age=3600`.\n\n", firstLine("squid", "-v"))
	if ok, why := b.sluiceCaches(); !ok {
		fmt.Fprintf(b.out, "sluice: no cache yet (`sluice check` on `option cache_size` says: %s); squid alone below.\n\n", oneLine(why))
		b.specs = []relaySpec{b.specs[0], b.specs[2]}
	}
	stopServers, err := b.startHTTPServers()
	if err != nil {
		return err
	}
	defer stopServers()
	rs, err := b.startProxies()
	if err != nil {
		return err
	}
	defer stopAll(rs)
	for _, r := range rs {
		addr, direct := proxyAddr(r)
		if err := warm(addr, direct); err != nil {
			return fmt.Errorf("%s: %w", r.spec.name, err)
		}
	}
	rps, p99, toOrigin := newTable("requests/s", true), newTable("p99 us", false), newTable("origin requests per 1,000", false)
	for range b.reps {
		for _, r := range rs {
			addr, direct := proxyAddr(r)
			before, err := originCount()
			if err != nil {
				return err
			}
			var res httpLoadResult
			if err := loadJSON(&res, b.self, "httpload", "-addr", addr, "-origin", httpOrigin, "-direct="+strconv.FormatBool(direct),
				"-path", "/cache/", "-paths", strconv.Itoa(cacheObjects),
				"-conns", strconv.Itoa(httpClients), "-dur", b.dur.String(), "-size", strconv.Itoa(httpBodySize)); err != nil {
				return fmt.Errorf("%s: %w", r.spec.name, err)
			}
			after, err := originCount()
			if err != nil {
				return err
			}
			rps.add(r.spec, res.RPS)
			p99.add(r.spec, res.P99)
			if res.Requests > 0 {
				toOrigin.add(r.spec, float64(after.Total-before.Total)*1000/float64(res.Requests))
			}
		}
	}
	b.print(fmt.Sprintf("Cached GET, %d keep-alive clients over %d cached %d-byte objects", httpClients, cacheObjects, httpBodySize), rps, p99, toOrigin)
	miss := newTable("origin requests", false)
	for rep := range b.reps {
		for i, r := range rs {
			if r.spec.kind == "direct" {
				continue
			}
			path := fmt.Sprintf("/slow/%d-%d-%d", i, rep, time.Now().UnixNano())
			var res burstResult
			if err := loadJSON(&res, b.self, "burst", "-proxy", r.addr, "-origin", httpOrigin, "-path", path,
				"-n", strconv.Itoa(burstClients), "-size", strconv.Itoa(httpBodySize)); err != nil {
				return fmt.Errorf("%s: %w", r.spec.name, err)
			}
			if res.Errors > 0 {
				return fmt.Errorf("%s: %d of %d concurrent misses failed", r.spec.name, res.Errors, burstClients)
			}
			counts, err := originCount()
			if err != nil {
				return err
			}
			miss.add(r.spec, float64(counts.Slow[path]))
		}
	}
	b.print(fmt.Sprintf("Concurrent misses: %d clients GET one uncached object at once (the origin answers after 300 ms); requests that reached the origin", burstClients), miss)
	return nil
}

// warm fetches every cache object twice through addr.
func warm(addr string, direct bool) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	for range 2 {
		for i := range cacheObjects {
			if _, err := c.Write(getRequest(httpOrigin, "/cache/"+strconv.Itoa(i), direct)); err != nil {
				return err
			}
			status, body, keep, err := readResponse(r, nil)
			if err != nil {
				return fmt.Errorf("warm-up: %w", err)
			}
			if status != 200 || len(body) != httpBodySize || !keep {
				return fmt.Errorf("warm-up: status %d, %d bytes, keep-alive %v", status, len(body), keep)
			}
		}
	}
	return nil
}

// originCount asks the origin for its request counts.
func originCount() (originCounts, error) {
	var oc originCounts
	c, err := net.DialTimeout("tcp", httpOrigin, 5*time.Second)
	if err != nil {
		return oc, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(getRequest(httpOrigin, "/__count", true)); err != nil {
		return oc, err
	}
	_, body, _, err := readResponse(bufio.NewReader(c), nil)
	if err != nil {
		return oc, fmt.Errorf("origin counts: %w", err)
	}
	return oc, json.Unmarshal(body, &oc)
}

// firstLine is the first line a command prints (a version).
func firstLine(name string, args ...string) string {
	out, _ := exec.Command(name, args...).CombinedOutput()
	return oneLine(string(out))
}

func oneLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}
