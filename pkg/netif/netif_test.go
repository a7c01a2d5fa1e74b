package netif

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// requireNetlink skips t where link queries fail even for lo. Seen under
// qemu-mips-static (big-endian MIPS on an x86 host): RTM_GETLINK gets
// EINVAL while address dumps work, which points at qemu-user's
// translation of the request's attributes; no big-endian kernel was at
// hand to tell for sure.
func requireNetlink(t *testing.T) {
	t.Helper()
	if _, err := netlink.LinkByName("lo"); err != nil {
		t.Skipf("skipped: netlink link queries fail here (qemu-user?): %v", err)
	}
}

// TestFollowLoopback follows lo: its addresses are reported before Follow
// returns, and Close ends the watcher without reporting an error (closing
// the netlink sockets is the watcher stopping, not a fault).
func TestFollowLoopback(t *testing.T) {
	requireNetlink(t)
	var mu sync.Mutex
	var got []netip.Addr
	var errs []error
	w, err := Follow("lo", func(a netip.Addr, up bool) error {
		mu.Lock()
		defer mu.Unlock()
		if up {
			got = append(got, a)
		}
		return nil
	}, func(err error) {
		mu.Lock()
		defer mu.Unlock()
		errs = append(errs, err)
	})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	found := false
	for _, a := range got {
		found = found || a == netip.MustParseAddr("127.0.0.1")
	}
	mu.Unlock()
	if !found {
		t.Errorf("lo reported %v, want 127.0.0.1 among them", got)
	}
	w.Close()
	time.Sleep(100 * time.Millisecond) // the subscriptions' receivers end after Close
	mu.Lock()
	defer mu.Unlock()
	if len(errs) > 0 {
		t.Errorf("errors reported around Close: %v", errs)
	}
}

// TestFollowMissingDevice follows a device that does not exist: no
// addresses and no error, since it may appear later.
func TestFollowMissingDevice(t *testing.T) {
	requireNetlink(t)
	w, err := Follow("sluice-none0", func(a netip.Addr, up bool) error {
		t.Errorf("address %v reported for a missing device", a)
		return nil
	}, func(err error) { t.Errorf("error: %v", err) })
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
}
