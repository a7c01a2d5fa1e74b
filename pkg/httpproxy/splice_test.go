package httpproxy

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-proxy/sluice/pkg/filter"
)

// TestBodySplice downloads bodies through a proxy in this process
// and checks every byte (sha256) and, from the relay pools' counters,
// which bodies were spliced: a large Content-Length body is, each way, and
// so are the data of a large chunk (to an HTTP/1.1 client, and dechunked
// to an HTTP/1.0 one) and a body that ends when the origin closes; a
// small body, a chunked one in small chunks and a text one under the
// content filter are copied.
func TestBodySplice(t *testing.T) {
	bodies := map[string][]byte{}
	for _, n := range []int{100, 256 << 10, 3<<20 + 17} {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7 + i/251)
		}
		for _, kind := range []string{"/len/", "/chunked/", "/pieces/", "/close/"} {
			bodies[kind+strconv.Itoa(n)] = b
		}
	}
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" { // an upload: answer its sha256
			h := sha256.New()
			_, _ = io.Copy(h, r.Body)
			_, _ = w.Write(h.Sum(nil))
			return
		}
		b := bodies[r.URL.Path]
		kind, _, _ := strings.Cut(r.URL.Path[1:], "/")
		w.Header().Set("Content-Type", "text/plain")
		switch kind {
		case "len":
			w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		case "close": // no framing: the body ends when the connection does
			conn, buf, err := w.(http.Hijacker).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			_, _ = buf.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")
			_, _ = buf.Write(b)
			_ = buf.Flush()
			return
		case "pieces": // chunked, a 4 KiB chunk at a time
			for len(b) > 0 {
				piece := b[:min(len(b), 4096)]
				_, _ = w.Write(piece)
				w.(http.Flusher).Flush()
				b = b[len(piece):]
			}
			return
		default: // chunked: one chunk of the whole body (net/http writes a large Write at once)
			w.(http.Flusher).Flush()
		}
		_, _ = w.Write(b)
	}))
	defer origin.Close()

	tests := []struct {
		name    string
		path    string
		words   bool
		spliced bool
		upload  bool
		http10  bool
	}{
		{"large upload", "/len/" + strconv.Itoa(3<<20+17), false, true, true, false},
		{"small upload", "/len/100", false, false, true, false},
		{"large length body", "/len/" + strconv.Itoa(3<<20+17), false, true, false, false},
		{"quarter MiB body", "/len/" + strconv.Itoa(256<<10), false, true, false, false},
		{"small body", "/len/100", false, false, false, false},
		{"large chunk", "/chunked/" + strconv.Itoa(3<<20+17), false, true, false, false},
		{"large chunk dechunked for HTTP/1.0", "/chunked/" + strconv.Itoa(3<<20+17), false, true, false, true},
		{"small chunks", "/pieces/" + strconv.Itoa(3<<20+17), false, false, false, false},
		{"body until close", "/close/" + strconv.Itoa(3<<20+17), false, true, false, false},
		{"filtered body", "/len/" + strconv.Itoa(3<<20+17), true, false, false, false},
		{"filtered chunk", "/chunked/" + strconv.Itoa(3<<20+17), true, false, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cfg Config
			if tt.words {
				cfg.BodyWords, _ = filter.NewWords([]string{"never-there"})
			}
			p := startProxy(t, cfg)
			proxy, _ := url.Parse("http://" + p.s.Addr())
			client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxy)}}
			want := bodies[tt.path]
			if tt.upload {
				resp, err := client.Post(origin.URL+"/upload", "application/octet-stream", bytes.NewReader(want))
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if sum := sha256.Sum256(want); err != nil || !bytes.Equal(got, sum[:]) {
					t.Fatalf("the origin got a body with sha256 %x (err %v), want %x", got, err, sum)
				}
			} else if tt.http10 {
				got := get10(t, p.s.Addr(), origin.URL+tt.path)
				if !bytes.Equal(got, want) {
					t.Fatalf("HTTP/1.0: got %d bytes, want %d byte-exact", len(got), len(want))
				}
			} else {
				resp, err := client.Get(origin.URL + tt.path)
				if err != nil {
					t.Fatal(err)
				}
				h := sha256.New()
				n, err := io.Copy(h, resp.Body)
				resp.Body.Close()
				if err != nil || n != int64(len(want)) || [32]byte(h.Sum(nil)) != sha256.Sum256(want) {
					t.Fatalf("got %d bytes (err %v), want %d byte-exact", n, err, len(want))
				}
			}
			c := p.counters()
			if spliced := c.SplicedBytes > 0; spliced != tt.spliced {
				t.Errorf("spliced %d bytes, want spliced=%v", c.SplicedBytes, tt.spliced)
			}
			if tt.spliced && c.SplicedBytes < uint64(len(want))-64<<10 {
				t.Errorf("spliced only %d of %d bytes", c.SplicedBytes, len(want))
			}
		})
	}
}

// get10 sends an HTTP/1.0 GET for target through the proxy at addr and
// returns the body, read until the proxy closes.
func get10(t *testing.T, addr, target string) []byte {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, "GET "+target+" HTTP/1.0\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	all, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	head, body, ok := bytes.Cut(all, []byte("\r\n\r\n"))
	if !ok || !bytes.HasPrefix(head, []byte("HTTP/1.1 200 ")) || bytes.Contains(bytes.ToLower(head), []byte("transfer-encoding")) {
		t.Fatalf("HTTP/1.0 response head %q", head)
	}
	return body
}

// TestChunkedUploadSplice sends a chunked upload of three chunks (1 MiB,
// 100 bytes, 512 KiB) through the proxy: the origin sees every byte
// (sha256), the large chunks' data are spliced and the framing between
// them is checked on the way.
func TestChunkedUploadSplice(t *testing.T) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		_, _ = io.Copy(h, r.Body)
		_, _ = w.Write(h.Sum(nil))
	}))
	defer origin.Close()
	p := startProxy(t, Config{})
	var data, wire bytes.Buffer
	for i, n := range []int{1 << 20, 100, 512 << 10} {
		chunk := bytes.Repeat([]byte{byte('a' + i)}, n)
		data.Write(chunk)
		fmt.Fprintf(&wire, "%x\r\n%s\r\n", n, chunk)
	}
	wire.WriteString("0\r\n\r\n")
	c, err := net.Dial("tcp", p.s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	head := "POST " + origin.URL + "/up HTTP/1.1\r\nHost: " + origin.Listener.Addr().String() +
		"\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
	go func() { _, _ = c.Write(append([]byte(head), wire.Bytes()...)) }()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	if sum := sha256.Sum256(data.Bytes()); err != nil || !bytes.Equal(got, sum[:]) {
		t.Fatalf("the origin got a body with sha256 %x (err %v), want %x", got, err, sum)
	}
	if c := p.counters(); c.SplicedBytes < 1<<20+512<<10-2*spliceMin {
		t.Errorf("spliced %d bytes of the 1.5 MiB in large chunks", c.SplicedBytes)
	}
}
