package httpproxy

import (
	"strconv"

	"github.com/sluice-proxy/sluice/pkg/httpmsg"
)

// viaValue is what sluice adds to Via (RFC 9110 section 7.6.3).
const viaValue = "1.1 sluice"

// hopByHop are the fields that describe one connection and are never
// forwarded (RFC 9110 section 7.6.1), besides those Connection names.
// Transfer-Encoding is not among them: chunked bodies are passed through
// as they are, checked on the way.
var hopByHop = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "TE", "Trailer", "Upgrade",
	"Proxy-Authorization", "Proxy-Authenticate",
}

func isHopByHop(name string, extra []string) bool {
	for _, h := range hopByHop {
		if httpmsg.EqualFold(name, h) {
			return true
		}
	}
	for _, h := range extra {
		if httpmsg.EqualFold(name, h) {
			return true
		}
	}
	return false
}

// requestHead builds the head sent to the origin: origin-form target,
// Host from the URI, hop-by-hop fields dropped, Via added, X-Forwarded-For
// only when configured. It is appended to b. The origin connection is kept alive (HTTP/1.1's
// default) and pooled after the exchange when the response allows.
func (c *conn) requestHead(b []byte) []byte {
	ex := c.ex
	req := ex.req
	b = append(b, req.Method...)
	b = append(b, ' ')
	b = append(b, ex.t.path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, ex.t.authority()...)
	b = append(b, "\r\n"...)
	extra := req.Header.ConnectionTokens()
	var xff string
	for _, f := range req.Header {
		if httpmsg.EqualFold(f.Name, "Host") || isHopByHop(f.Name, extra) {
			continue
		}
		if c.s.cfg.BodyWords != nil && httpmsg.EqualFold(f.Name, "Accept-Encoding") {
			continue // the content filter reads bodies uncompressed
		}
		if httpmsg.EqualFold(f.Name, "Max-Forwards") {
			if n, ok := maxForwards(req); ok && n > 0 {
				b = appendField(b, f.Name, strconv.FormatInt(n-1, 10))
				continue
			}
		}
		if httpmsg.EqualFold(f.Name, "X-Forwarded-For") {
			if c.s.cfg.ForwardedFor {
				xff = f.Value
				continue
			}
		}
		b = appendField(b, f.Name, f.Value)
	}
	b = appendField(b, "Via", viaValue)
	b = c.cacheRequestFields(b)
	if c.s.cfg.ForwardedFor && c.client.IsValid() {
		if xff != "" {
			xff += ", "
		}
		b = appendField(b, "X-Forwarded-For", xff+c.client.String())
	}
	return append(b, "\r\n"...)
}

// responseHead appends the head sent to the client to b.
func (c *conn) responseHead(b []byte, resp *httpmsg.Response, dechunk bool) []byte {
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(resp.Status), 10)
	b = append(b, ' ')
	b = append(b, resp.Reason...)
	b = append(b, "\r\n"...)
	extra := resp.Header.ConnectionTokens()
	for _, f := range resp.Header {
		if isHopByHop(f.Name, extra) || dechunk && httpmsg.EqualFold(f.Name, "Transfer-Encoding") {
			continue
		}
		b = appendField(b, f.Name, f.Value)
	}
	b = appendField(b, "Via", viaValue)
	if !c.ex.keepClient {
		b = append(b, "Connection: close\r\n"...)
	}
	return append(b, "\r\n"...)
}

// interimHead appends a 1xx response for the client to b.
func interimHead(b []byte, resp *httpmsg.Response) []byte {
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(resp.Status), 10)
	b = append(b, ' ')
	b = append(b, resp.Reason...)
	b = append(b, "\r\n"...)
	extra := resp.Header.ConnectionTokens()
	for _, f := range resp.Header {
		if !isHopByHop(f.Name, extra) {
			b = appendField(b, f.Name, f.Value)
		}
	}
	return append(b, "\r\n"...)
}

func appendField(b []byte, name, value string) []byte {
	b = append(b, name...)
	b = append(b, ": "...)
	b = append(b, value...)
	return append(b, "\r\n"...)
}

// statusText are the reason phrases of the statuses sluice answers itself.
var statusText = map[int]string{
	400: "Bad Request",
	403: "Forbidden",
	407: "Proxy Authentication Required",
	408: "Request Timeout",
	414: "URI Too Long",
	429: "Too Many Requests",
	431: "Request Header Fields Too Large",
	501: "Not Implemented",
	502: "Bad Gateway",
	503: "Service Unavailable",
	504: "Gateway Timeout",
	505: "HTTP Version Not Supported",
}

// errorResponse is a complete short response that ends the connection.
func errorResponse(status int, reason string) []byte {
	text := statusText[status]
	if text == "" {
		text = "Error"
	}
	body := strconv.Itoa(status) + " " + text + ": " + reason + "\n"
	b := make([]byte, 0, 256)
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, text...)
	b = append(b, "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\nConnection: close\r\nVia: "+viaValue+"\r\n"...)
	if status == 407 {
		b = append(b, "Proxy-Authenticate: Basic realm=\"sluice\", charset=\"UTF-8\"\r\n"...)
	}
	b = append(b, "\r\n"...)
	return append(b, body...)
}
