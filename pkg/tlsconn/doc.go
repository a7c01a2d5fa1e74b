// Package tlsconn is TLS on the reactor: the handshake runs off the loop in a
// bounded pool, and the TLS 1.3 record layer is then driven from the loop
// with no goroutine and no buffer held by an idle connection.
//
// # Handshake
//
// [Client] and [Server] take a connected non-blocking socket fd that belongs
// to loop l (it may be registered with l's epoll, but its handler must be nil
// or ignore events until done runs). A job in the given [reactor.Pool] runs
// crypto/tls's handshake over a net.Conn made from a duplicate of fd
// (os.NewFile + net.FileConn: Go's netpoller and a deadline for the timeout,
// no OS thread blocked), closes the duplicate and posts the result to l,
// where done runs. The reader under crypto/tls never reads past the end of
// the current TLS record, so no application byte is left inside crypto/tls
// when the handshake ends.
//
// On success done gets a *Conn that owns nothing but the keys: fd still
// belongs to the caller (close it with Loop.Close or Loop.CloseReset as for a
// plain socket). On failure done gets (nil, err) and the caller closes fd.
//
// # Records
//
// Only TLS 1.3 is supported after the handshake (the config's MinVersion is
// raised to 1.3); the traffic secrets are taken from the per-connection
// config clone's KeyLogWriter and the record layer (AES-128-GCM,
// AES-256-GCM, ChaCha20-Poly1305) is this package's. NewSessionTicket is
// ignored, KeyUpdate is answered (RFC 8446 4.6.3), close_notify ends the
// reading direction (io.EOF), any other alert is an error. Servers do not
// send session tickets.
//
// A Conn takes a read buffer only while a record is partly read or
// decrypted bytes wait, and a write buffer only while sealed bytes wait for
// the socket; both come from the loop's relay.Pool when one is set.
package tlsconn
