package httpmsg

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestParseRequest(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		method  string
		target  string
		framing Framing
		length  int64
		close   bool
	}{
		{"get absolute", "GET http://a.example/x?y HTTP/1.1\r\nHost: a.example\r\n\r\n", "GET", "http://a.example/x?y", NoBody, 0, false},
		{"post length", "POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", "POST", "http://a/", Length, 5, false},
		{"same length twice", "POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5, 5\r\n\r\n", "POST", "http://a/", Length, 5, false},
		{"chunked", "PUT http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n", "PUT", "http://a/", Chunked, 0, false},
		{"connect", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", "CONNECT", "a:443", NoBody, 0, false},
		{"http/1.0 closes", "GET http://a/ HTTP/1.0\r\n\r\n", "GET", "http://a/", NoBody, 0, true},
		{"http/1.0 keep-alive", "GET http://a/ HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", "GET", "http://a/", NoBody, 0, false},
		{"connection close", "GET http://a/ HTTP/1.1\r\nHost: a\r\nConnection: foo, close\r\n\r\n", "GET", "http://a/", NoBody, 0, true},
		{"leading empty line", "\r\nGET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", "GET", "http://a/", NoBody, 0, false},
		{"ows and obs-text", "GET http://a/ HTTP/1.1\r\nHost:a\r\nX-A: \t v\xe9 \t\r\n\r\n", "GET", "http://a/", NoBody, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, n, err := ParseRequest([]byte(tt.in), Limits{})
			if err != nil {
				t.Fatalf("ParseRequest: %v", err)
			}
			if want := strings.Index(tt.in, "\r\n\r\n") + 4; n != want {
				t.Errorf("head length %d, want %d", n, want)
			}
			if req.Method != tt.method || req.Target != tt.target || req.Framing != tt.framing || req.ContentLength != tt.length || req.Close != tt.close {
				t.Errorf("got %s %s framing %v length %d close %v; want %s %s %v %d %v",
					req.Method, req.Target, req.Framing, req.ContentLength, req.Close, tt.method, tt.target, tt.framing, tt.length, tt.close)
			}
		})
	}
}

func TestParseRequestValue(t *testing.T) {
	req, _, err := ParseRequest([]byte("GET http://a/ HTTP/1.1\r\nHost: a\r\nX-A: \t v\xe9 \t\r\n\r\n"), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := req.Header.Get("x-a"); v != "v\xe9" {
		t.Errorf("X-A = %q, want OWS trimmed", v)
	}
}

func TestParseRequestErrors(t *testing.T) {
	long := strings.Repeat("a", 9000)
	many := strings.Repeat("X-A: 1\r\n", 101)
	big := strings.Repeat("X-Big: "+strings.Repeat("b", 4000)+"\r\n", 5)
	tests := []struct {
		name   string
		in     string
		status int
	}{
		{"cl and te", "POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"te and cl", "POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400},
		{"conflicting cl", "POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400},
		{"conflicting cl list", "POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\n", 400},
		{"signed cl", "POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n", 400},
		{"hex cl", "POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\n", 400},
		{"empty cl", "POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", 400},
		{"obs-fold", "GET http://a/ HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n", 400},
		{"obs-fold te", "POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n", 400},
		{"space before colon", "GET http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", 400},
		{"nul in value", "GET http://a/ HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n", 400},
		{"bare cr", "GET http://a/ HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n", 400},
		{"bare lf", "GET http://a/ HTTP/1.1\nHost: a\n\n", 400},
		{"te chunked twice", "POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400},
		{"empty te", "POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", 400},
		{"te not chunked", "POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
		{"te http/1.0", "POST http://a/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"no host 1.1", "GET http://a/ HTTP/1.1\r\n\r\n", 400},
		{"two hosts", "GET http://a/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"bad method", "G(T http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"two spaces", "GET  http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"http/2.0", "GET http://a/ HTTP/2.0\r\nHost: a\r\n\r\n", 505},
		{"lowercase version", "GET http://a/ http/1.1\r\nHost: a\r\n\r\n", 400},
		{"control in target", "GET http://a/\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"long request line", "GET http://a/" + long + " HTTP/1.1\r\nHost: a\r\n\r\n", 414},
		{"long request line incomplete", "GET http://a/" + long, 414},
		{"long field line", "GET http://a/ HTTP/1.1\r\nHost: a\r\nX-A: " + long + "\r\n\r\n", 431},
		{"too many fields", "GET http://a/ HTTP/1.1\r\nHost: a\r\n" + many + "\r\n", 431},
		{"head too large", "GET http://a/ HTTP/1.1\r\nHost: a\r\n" + big + "\r\n", 431},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ParseRequest([]byte(tt.in), Limits{})
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v, want status %d", err, tt.status)
			}
			if e.Status != tt.status {
				t.Errorf("status %d (%s), want %d", e.Status, e.Reason, tt.status)
			}
		})
	}
}

func TestParseRequestIncomplete(t *testing.T) {
	full := "POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n"
	for i := 0; i < len(full); i++ {
		if _, _, err := ParseRequest([]byte(full[:i]), Limits{}); err != ErrIncomplete {
			t.Fatalf("prefix %q: err = %v, want ErrIncomplete", full[:i], err)
		}
	}
}

func TestParseResponse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		method  string
		status  int
		framing Framing
		length  int64
		close   bool
	}{
		{"length", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", "GET", 200, Length, 10, false},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", 200, Chunked, 0, false},
		{"until close", "HTTP/1.1 200 OK\r\n\r\n", "GET", 200, UntilClose, 0, true},
		{"gzip te until close", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "GET", 200, UntilClose, 0, true},
		{"head", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", "HEAD", 200, NoBody, 0, false},
		{"no content", "HTTP/1.1 204 No Content\r\n\r\n", "GET", 204, NoBody, 0, false},
		{"not modified", "HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n", "GET", 304, NoBody, 0, false},
		{"continue", "HTTP/1.1 100 Continue\r\n\r\n", "POST", 100, NoBody, 0, false},
		{"no reason", "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", "GET", 200, Length, 0, false},
		{"http/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", "GET", 200, Length, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, n, err := ParseResponse([]byte(tt.in), Limits{}, tt.method)
			if err != nil {
				t.Fatalf("ParseResponse: %v", err)
			}
			if n != len(tt.in) {
				t.Errorf("head length %d, want %d", n, len(tt.in))
			}
			if resp.Status != tt.status || resp.Framing != tt.framing || resp.ContentLength != tt.length || resp.Close != tt.close {
				t.Errorf("got %d %v %d close %v; want %d %v %d %v", resp.Status, resp.Framing, resp.ContentLength, resp.Close,
					tt.status, tt.framing, tt.length, tt.close)
			}
		})
	}
}

func TestParseResponseErrors(t *testing.T) {
	for _, in := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		"HTTP/1.1 2000 OK\r\n\r\n",
		"HTTP/1.1 20x OK\r\n\r\n",
		"HTTP/1.1 099 OK\r\n\r\n",
		"ICY 200 OK\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
	} {
		if _, _, err := ParseResponse([]byte(in), Limits{}, "GET"); err == nil || err == ErrIncomplete {
			t.Errorf("%q: err = %v, want a parse error", in, err)
		}
	}
}

// decodeAll runs d over body split into pieces of size step and returns the
// data, the bytes consumed and the error.
func decodeAll(body []byte, step int) ([]byte, int, error) {
	var d ChunkedDecoder
	var data []byte
	total := 0
	for start := 0; start < len(body) && !d.Done(); start += step {
		end := min(start+step, len(body))
		p := body[start:end]
		for len(p) > 0 && !d.Done() {
			n, off, dn, err := d.Decode(p)
			total += n
			if err != nil {
				return data, total, err
			}
			data = append(data, p[off:off+dn]...)
			p = p[n:]
			if n == 0 {
				break
			}
		}
		if d.Done() {
			break
		}
	}
	if !d.Done() {
		return data, total, ErrIncomplete
	}
	return data, total, nil
}

func TestChunkedDecoder(t *testing.T) {
	tests := []struct {
		name, in, data string
		rest           string
	}{
		{"simple", "5\r\nhello\r\n0\r\n\r\n", "hello", ""},
		{"two chunks", "3\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\nNEXT", "abc0123456789", "NEXT"},
		{"extension", "3;name=v\r\nabc\r\n0;x\r\n\r\n", "abc", ""},
		{"trailers", "1\r\na\r\n0\r\nX-T: 1\r\nY: 2\r\n\r\n", "a", ""},
		{"upper hex", "1F\r\n" + strings.Repeat("z", 31) + "\r\n0\r\n\r\n", strings.Repeat("z", 31), ""},
	}
	for _, tt := range tests {
		for _, step := range []int{1, 2, 3, 7, 1000} {
			data, n, err := decodeAll([]byte(tt.in), step)
			if err != nil {
				t.Errorf("%s step %d: %v", tt.name, step, err)
				continue
			}
			if string(data) != tt.data || tt.in[n:] != tt.rest {
				t.Errorf("%s step %d: data %q rest %q, want %q %q", tt.name, step, data, tt.in[n:], tt.data, tt.rest)
			}
		}
	}
}

// decodeSkipping decodes body like decodeAll with the whole input, but
// moves half of every chunk's data that is still to come past the decoder
// with SkipData, as a proxy splicing chunk data does.
func decodeSkipping(body []byte) ([]byte, int, error) {
	var d ChunkedDecoder
	var data []byte
	n := 0
	for n < len(body) && !d.Done() {
		if left := d.DataLeft(); left > 0 {
			k := min(int((left+1)/2), len(body)-n)
			data = append(data, body[n:n+k]...)
			d.SkipData(uint64(k))
			n += k
			continue
		}
		m, off, dn, err := d.Decode(body[n:])
		if err != nil {
			return data, n + m, err
		}
		data = append(data, body[n+off:n+off+dn]...)
		n += m
	}
	if !d.Done() {
		return data, n, ErrIncomplete
	}
	return data, n, nil
}

func TestChunkedDecoderSkipData(t *testing.T) {
	var d ChunkedDecoder
	if d.DataLeft() != 0 {
		t.Fatal("data left before a size line")
	}
	in := []byte("A\r\n0123456789\r\n0\r\n\r\n")
	if n, _, dn, err := d.Decode(in[:3]); n != 3 || dn != 0 || err != nil {
		t.Fatalf("size line: %d %d %v", n, dn, err)
	}
	if d.DataLeft() != 10 {
		t.Fatalf("DataLeft %d after the size line, want 10", d.DataLeft())
	}
	d.SkipData(4)
	if d.DataLeft() != 6 {
		t.Fatalf("DataLeft %d after skipping 4, want 6", d.DataLeft())
	}
	d.SkipData(100) // clamped
	if d.DataLeft() != 0 {
		t.Fatalf("DataLeft %d after skipping the rest", d.DataLeft())
	}
	if n, _, _, err := d.Decode(in[13:]); err != nil || !d.Done() || n != len(in)-13 {
		t.Fatalf("after the skipped data: n %d, done %v, %v", n, d.Done(), err)
	}
	for _, tt := range []string{"3\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\n", "5\r\nhelloX\r\n0\r\n\r\n"} {
		want, wn, werr := decodeAll([]byte(tt), len(tt))
		got, gn, gerr := decodeSkipping([]byte(tt))
		if !bytes.Equal(got, want) || gn != wn || (gerr == nil) != (werr == nil) {
			t.Errorf("%q: skipping gives %q %d %v, decoding %q %d %v", tt, got, gn, gerr, want, wn, werr)
		}
	}
}

func TestChunkedDecoderErrors(t *testing.T) {
	for _, in := range []string{
		"x\r\n",
		"\r\n",
		"5\r\nhelloX\r\n0\r\n\r\n",
		"5\nhello\r\n0\r\n\r\n",
		"5\r\nhello\n0\r\n\r\n",
		"1234567890123456\r\n",
		"-1\r\n",
		"0\r\n X: folded\r\n\r\n",
		"0\r\nX: a\x00\r\n\r\n",
		"3;\x01\r\nabc\r\n0\r\n\r\n",
		"1\r\na\r\n0\r\n" + strings.Repeat("X: y\r\n", 4000) + "\r\n",
		"1" + strings.Repeat(" ", 5000) + "\r\n",
	} {
		if _, _, err := decodeAll([]byte(in), 3); err == nil || err == ErrIncomplete {
			t.Errorf("%q: err = %v, want a framing error", clip([]byte(in)), err)
		}
	}
}

func FuzzParseRequest(f *testing.F) {
	f.Add([]byte("GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n"))
	f.Add([]byte("POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		req, n, err := ParseRequest(b, Limits{MaxLine: 256, MaxHead: 1024, MaxFields: 16})
		if err != nil {
			if req != nil || n != 0 {
				t.Fatal("error with a result")
			}
			return
		}
		if n > len(b) || n > 1024 || !bytes.HasSuffix(b[:n], []byte("\r\n\r\n")) {
			t.Fatalf("head length %d does not end at an empty line", n)
		}
		if req.Framing == Length && req.ContentLength < 0 {
			t.Fatal("negative length")
		}
		if _, hasTE := req.Header.Get("Transfer-Encoding"); hasTE && req.Framing != Chunked {
			t.Fatalf("Transfer-Encoding accepted with framing %v", req.Framing)
		}
		// A request accepted once is accepted the same way whole.
		again, m, err := ParseRequest(b[:n], Limits{MaxLine: 256, MaxHead: 1024, MaxFields: 16})
		if err != nil || m != n || again.Method != req.Method || again.Target != req.Target {
			t.Fatalf("reparse differs: %v", err)
		}
	})
}

func FuzzParseResponse(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"), "GET")
	f.Add([]byte("HTTP/1.1 100 Continue\r\n\r\n"), "POST")
	f.Fuzz(func(t *testing.T, b []byte, method string) {
		resp, n, err := ParseResponse(b, Limits{}, method)
		if err != nil {
			return
		}
		if n > len(b) || resp.Status < 100 || resp.Status > 999 {
			t.Fatalf("bad result: n %d status %d", n, resp.Status)
		}
		if resp.Framing == UntilClose && !resp.Close {
			t.Fatal("until-close body on a kept connection")
		}
	})
}

func FuzzChunkedDecoder(f *testing.F) {
	f.Add([]byte("5\r\nhello\r\n0\r\n\r\n"), uint8(3))
	f.Add([]byte("3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\nrest"), uint8(1))
	f.Fuzz(func(t *testing.T, b []byte, step uint8) {
		whole, n1, err1 := decodeAll(b, len(b)+1)
		split, n2, err2 := decodeAll(b, int(step%16)+1)
		if (err1 == nil) != (err2 == nil) || n1 != n2 && err1 == nil || !bytes.Equal(whole, split) && err1 == nil {
			t.Fatalf("split decoding differs: %v/%v %d/%d %q/%q", err1, err2, n1, n2, whole, split)
		}
		if len(whole) > len(b) {
			t.Fatal("more data than input")
		}
		skipped, n3, err3 := decodeSkipping(b)
		if (err1 == nil) != (err3 == nil) || err1 == nil && (n1 != n3 || !bytes.Equal(whole, skipped)) {
			t.Fatalf("decoding with SkipData differs: %v/%v %d/%d %q/%q", err1, err3, n1, n3, whole, skipped)
		}
	})
}
