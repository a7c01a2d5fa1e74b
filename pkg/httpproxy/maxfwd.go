package httpproxy

import (
	"strconv"

	"github.com/sluice-proxy/sluice/pkg/httpmsg"
)

// allowedMethods is the Allow field of sluice's own answer to OPTIONS.
const allowedMethods = "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, TRACE, CONNECT"

// maxForwards returns the Max-Forwards of an OPTIONS or TRACE request
// (RFC 9110 section 7.6.2), and false for other methods, without the
// field or with a value that is not a number (then it is forwarded as it
// came).
func maxForwards(req *httpmsg.Request) (int64, bool) {
	if req.Method != "OPTIONS" && req.Method != "TRACE" {
		return 0, false
	}
	v, ok := req.Header.Get("Max-Forwards")
	if !ok || v == "" || len(v) > 18 {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || v[0] == '+' {
		return 0, false
	}
	return n, true
}

// localAnswer is sluice's own response to an OPTIONS or TRACE request
// whose Max-Forwards is 0: sluice is its final recipient. TRACE gets the
// request head back as message/http, without credentials and cookies.
func localAnswer(req *httpmsg.Request) []byte {
	var body []byte
	ctype := ""
	if req.Method == "TRACE" {
		ctype = "message/http"
		body = append(body, req.Method...)
		body = append(body, ' ')
		body = append(body, req.Target...)
		body = append(body, " HTTP/1.1\r\n"...)
		for _, f := range req.Header {
			switch {
			case httpmsg.EqualFold(f.Name, "Proxy-Authorization"), httpmsg.EqualFold(f.Name, "Authorization"),
				httpmsg.EqualFold(f.Name, "Cookie"):
				continue
			}
			body = appendField(body, f.Name, f.Value)
		}
		body = append(body, "\r\n"...)
	}
	b := make([]byte, 0, 256+len(body))
	b = append(b, "HTTP/1.1 200 OK\r\n"...)
	if req.Method == "OPTIONS" {
		b = appendField(b, "Allow", allowedMethods)
	} else {
		b = appendField(b, "Content-Type", ctype)
	}
	b = appendField(b, "Content-Length", strconv.Itoa(len(body)))
	b = append(b, "Connection: close\r\nVia: "+viaValue+"\r\n\r\n"...)
	return append(b, body...)
}
