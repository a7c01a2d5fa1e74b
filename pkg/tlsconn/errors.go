package tlsconn

import "errors"

// ErrAgain is returned by Read when no whole record is available and by
// Write when sealed bytes still wait for the socket: wait for the fd's next
// readiness edge and call again.
var ErrAgain = errors.New("tls: would block")

var (
	errRecordOverflow = errors.New("tls: record too large")
	errBadRecord      = errors.New("tls: bad record type")
	errDecrypt        = errors.New("tls: record authentication failed")
	errTruncated      = errors.New("tls: connection closed without close_notify")
	errUnsupported    = errors.New("tls: unsupported cipher suite or version")
	errBadHandshake   = errors.New("tls: bad post-handshake message")
	errClosed         = errors.New("tls: write after CloseWrite")
)
