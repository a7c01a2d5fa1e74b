// Package test holds the end-to-end integration tests of the sluice binary.
//
// TestMain builds ./cmd/sluice once (or uses the binary named by $SLUICE_BIN)
// and every test runs it as a separate process, listening on a loopback
// address with port 0 and relaying to backends that live in the test
// process. Clients and backends are plain Go sockets, so the test process is
// the independent oracle: each side hashes what it sends and what it
// receives, and the hashes must agree.
//
// Run it with `go test ./test/` from the module root, or against a given
// binary with `SLUICE_BIN=/path/to/sluice go test ./test/`. The whole
// package takes well under a minute on two cores when sluice is healthy.
//
// Tests that need root, iproute2 (ip), util-linux (prlimit) or IPv6 on
// loopback skip with the reason. Tests that need privileges are named
// TestIntegration....
//
// Who owns what: each test owns the sluice processes it starts (killed with
// SIGKILL by PID in t.Cleanup), the backends it starts (closed in t.Cleanup)
// and the network namespaces it creates (deleted in t.Cleanup).
package test
