// Command demo is the backend `make run` puts behind sluice: a tiny HTTP
// server that says hello, echoes POST bodies and streams bytes on demand,
// so a newcomer can try sluice with curl.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"strconv"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:8081", "address to serve on")
	flag.Parse()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			io.Copy(w, r.Body)
			return
		}
		fmt.Fprintf(w, "hello from the demo backend at %s, reached through sluice from %s\n", *addr, r.RemoteAddr)
	})
	mux.HandleFunc("/bytes/", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.URL.Path[len("/bytes/"):], 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "want /bytes/N with N a byte count", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		buf := make([]byte, 32<<10)
		for i := range buf {
			buf[i] = byte(i * 7)
		}
		for n > 0 {
			m := min(n, int64(len(buf)))
			if _, err := w.Write(buf[:m]); err != nil {
				return
			}
			n -= m
		}
	})
	log.Printf("demo backend listening on %s", *addr)
	log.Fatal(http.ListenAndServe(*addr, mux))
}
