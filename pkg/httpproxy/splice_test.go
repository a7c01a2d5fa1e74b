package httpproxy

import (
	"bytes"
	"crypto/sha256"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"

	"github.com/sluice-proxy/sluice/pkg/filter"
)

// TestBodySplice downloads bodies through a proxy in this process
// and checks every byte (sha256) and, from the relay pools' counters,
// which bodies were spliced: a large Content-Length body is, each way; a
// small one, a chunked one and a text one under the content filter are
// copied.
func TestBodySplice(t *testing.T) {
	bodies := map[string][]byte{}
	for _, n := range []int{100, 256 << 10, 3<<20 + 17} {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7 + i/251)
		}
		bodies["/len/"+strconv.Itoa(n)] = b
		bodies["/chunked/"+strconv.Itoa(n)] = b
	}
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" { // an upload: answer its sha256
			h := sha256.New()
			_, _ = io.Copy(h, r.Body)
			_, _ = w.Write(h.Sum(nil))
			return
		}
		b := bodies[r.URL.Path]
		if r.URL.Path[:4] == "/len" {
			w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		} else {
			w.(http.Flusher).Flush() // chunked
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write(b)
	}))
	defer origin.Close()

	tests := []struct {
		name    string
		path    string
		words   bool
		spliced bool
		upload  bool
	}{
		{"large upload", "/len/" + strconv.Itoa(3<<20+17), false, true, true},
		{"small upload", "/len/100", false, false, true},
		{"large length body", "/len/" + strconv.Itoa(3<<20+17), false, true, false},
		{"quarter MiB body", "/len/" + strconv.Itoa(256<<10), false, true, false},
		{"small body", "/len/100", false, false, false},
		{"chunked body", "/chunked/" + strconv.Itoa(3<<20+17), false, false, false},
		{"filtered body", "/len/" + strconv.Itoa(3<<20+17), true, false, false},
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
