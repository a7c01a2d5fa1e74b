package httpmsg

// MaxChunkLine bounds a chunk-size line with its extensions, and each
// trailer line.
const MaxChunkLine = 4096

// maxTrailer bounds all trailer lines together.
const maxTrailer = 16384

type chunkState uint8

const (
	chunkSize    chunkState = iota // reading hex digits
	chunkExt                       // after the size: extensions up to CRLF
	chunkSizeLF                    // saw CR after the size line
	chunkData                      // inside chunk data
	chunkDataCR                    // expecting CR after the data
	chunkDataLF                    // expecting LF after the data
	trailerStart                   // at the start of a trailer line or the final CRLF
	trailerLine                    // inside a trailer line
	trailerLF                      // saw CR ending a trailer line
	finalLF                        // saw CR of the final empty line
	chunkDone                      // the body has ended
)

// ChunkedDecoder follows the chunked transfer coding (RFC 9112 section 7.1)
// through a body as it streams by, in pieces of any size: it finds the
// chunk data and the end of the body without buffering anything. Its zero
// value is ready at the start of a body.
type ChunkedDecoder struct {
	state   chunkState
	size    uint64 // left in the current chunk; the size while reading digits
	digits  int
	line    int // bytes of the current size or trailer line
	trailer int // bytes of trailer so far
}

// Done reports whether the whole body, trailers included, has passed.
func (d *ChunkedDecoder) Done() bool { return d.state == chunkDone }

// DataLeft returns how many bytes of the current chunk's data are still to
// come when the decoder is inside chunk data, else 0. They pass through
// unchanged, so a proxy may move them without looking (splice) and report
// them with SkipData.
func (d *ChunkedDecoder) DataLeft() uint64 {
	if d.state != chunkData {
		return 0
	}
	return d.size
}

// SkipData consumes n bytes of chunk data that passed without Decode; n is
// at most DataLeft (more is clamped).
func (d *ChunkedDecoder) SkipData(n uint64) {
	if d.state != chunkData {
		return
	}
	d.size -= min(n, d.size)
	if d.size == 0 {
		d.state = chunkDataCR
	}
}

// Decode advances over p. It returns n, how many bytes of p belong to the
// body and were consumed, and among them one span of chunk data,
// p[off:off+dn] (dn may be 0). It stops after the first data span, so call
// it again on p[n:] until n == len(p) or Done. After Done, p[n:] is the
// start of whatever follows the body. A framing error is an *Error.
func (d *ChunkedDecoder) Decode(p []byte) (n, off, dn int, err error) {
	for n < len(p) {
		c := p[n]
		switch d.state {
		case chunkSize:
			v, ok := hexVal(c)
			switch {
			case ok:
				d.digits++
				if d.digits > 15 {
					return n, 0, 0, bad("chunk size too large")
				}
				d.size = d.size<<4 | uint64(v)
			case d.digits == 0:
				return n, 0, 0, bad("malformed chunk size")
			case c == ';':
				d.state = chunkExt
			case c == '\r':
				d.state = chunkSizeLF
			case c == ' ' || c == '\t':
				d.state = chunkExt // BWS before an extension
			default:
				return n, 0, 0, bad("malformed chunk size")
			}
		case chunkExt:
			switch {
			case c == '\r':
				d.state = chunkSizeLF
			case !isFieldChar(c):
				return n, 0, 0, bad("invalid character in chunk extension")
			}
		case chunkSizeLF:
			if c != '\n' {
				return n, 0, 0, bad("chunk size line without CRLF")
			}
			d.line, d.digits = 0, 0
			if d.size == 0 {
				d.state = trailerStart
			} else {
				d.state = chunkData
			}
			n++
			continue
		case chunkData:
			k := uint64(len(p) - n)
			if k > d.size {
				k = d.size
			}
			off, dn = n, int(k)
			n += int(k)
			d.size -= k
			if d.size == 0 {
				d.state = chunkDataCR
			}
			return n, off, dn, nil
		case chunkDataCR:
			if c != '\r' {
				return n, 0, 0, bad("chunk data longer than its size")
			}
			d.state = chunkDataLF
		case chunkDataLF:
			if c != '\n' {
				return n, 0, 0, bad("chunk data without CRLF")
			}
			d.state, d.line = chunkSize, 0
			n++
			continue
		case trailerStart:
			switch c {
			case '\r':
				d.state = finalLF
			case ' ', '\t':
				return n, 0, 0, bad("obsolete line folding in trailer")
			default:
				d.state = trailerLine
				d.line = 0
				continue // count and check it as a trailer byte
			}
		case trailerLine:
			switch {
			case c == '\r':
				d.state = trailerLF
			case !isFieldChar(c):
				return n, 0, 0, bad("invalid character in trailer")
			}
		case trailerLF, finalLF:
			if c != '\n' {
				return n, 0, 0, bad("trailer line without CRLF")
			}
			if d.state == finalLF {
				d.state = chunkDone
				return n + 1, 0, 0, nil
			}
			d.state = trailerStart
		case chunkDone:
			return n, 0, 0, nil
		}
		d.line++
		if d.line > MaxChunkLine {
			return n, 0, 0, bad("chunk line too long")
		}
		if d.state >= trailerStart {
			d.trailer++
			if d.trailer > maxTrailer {
				return n, 0, 0, &Error{Status: 431, Reason: "trailer too large"}
			}
		}
		n++
	}
	return n, 0, 0, nil
}

func hexVal(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
