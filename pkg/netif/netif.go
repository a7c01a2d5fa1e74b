// Package netif follows the addresses of one network device through a
// netlink subscription: a listener that names an interface (`option
// interface 'br-lan'`) binds to each of its addresses and follows them as a
// PPPoE link is redialled, DHCP renews or the link goes down and up.
//
// The device is followed by name, so it may appear later or be recreated
// (a PPPoE device). An address counts while the device is administratively
// up and the address is not tentative (IPv6 duplicate address detection
// still running: it cannot be bound yet).
package netif

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
)

// ifaTentative is IFA_F_TENTATIVE from <linux/if_addr.h>.
const ifaTentative = 0x40

// Change is called on the watcher's goroutine for every address that
// becomes usable (up true) or stops being usable (up false). When it
// returns an error for a new address, the address is not counted as in use
// and is offered again on the next netlink event.
type Change func(addr netip.Addr, up bool) error

// Watcher follows one device. Close stops it.
type Watcher struct {
	name   string
	change Change
	onErr  func(error)
	done   chan struct{}
	wg     sync.WaitGroup
	inUse  map[netip.Addr]bool // owned by the watcher goroutine
}

// Follow reports the current usable addresses of the device called name
// through change, before it returns, then every change until Close. onErr
// (optional) is told about netlink errors.
func Follow(name string, change Change, onErr func(error)) (*Watcher, error) {
	if onErr == nil {
		onErr = func(error) {}
	}
	w := &Watcher{name: name, change: change, onErr: onErr, done: make(chan struct{}), inUse: make(map[netip.Addr]bool)}
	addrs := make(chan netlink.AddrUpdate, 64)
	links := make(chan netlink.LinkUpdate, 64)
	// Close ends a subscription by closing its socket, which its receiver
	// reports as an error ("Receive failed: resource temporarily
	// unavailable"): that one is the watcher stopping, not a fault.
	subErr := func(err error) {
		select {
		case <-w.done:
		default:
			onErr(err)
		}
	}
	if err := netlink.AddrSubscribeWithOptions(addrs, w.done, netlink.AddrSubscribeOptions{ErrorCallback: subErr}); err != nil {
		close(w.done)
		return nil, fmt.Errorf("follow %s: subscribe to addresses: %w", name, err)
	}
	if err := netlink.LinkSubscribeWithOptions(links, w.done, netlink.LinkSubscribeOptions{ErrorCallback: subErr}); err != nil {
		close(w.done)
		return nil, fmt.Errorf("follow %s: subscribe to links: %w", name, err)
	}
	// Subscribed first, listed second: a change between the two is seen
	// as an event and the sync after it catches up.
	w.sync()
	w.wg.Add(1)
	go w.run(addrs, links)
	return w, nil
}

func (w *Watcher) run(addrs <-chan netlink.AddrUpdate, links <-chan netlink.LinkUpdate) {
	defer w.wg.Done()
	for {
		select {
		case _, ok := <-addrs:
			if !ok {
				w.ended()
				return
			}
		case _, ok := <-links:
			if !ok {
				w.ended()
				return
			}
		case <-w.done:
			return
		}
		// Any event may concern the device (indexes change when it is
		// recreated): list again and act on the difference. Events come
		// a few a day on a router, so a dump each is cheap.
		w.sync()
	}
}

func (w *Watcher) ended() {
	select {
	case <-w.done:
	default:
		w.onErr(fmt.Errorf("follow %s: netlink subscription ended; addresses are no longer followed", w.name))
	}
}

// sync lists the device's usable addresses and reports the difference.
func (w *Watcher) sync() {
	want, err := usable(w.name)
	if err != nil {
		w.onErr(err)
		return
	}
	for a := range w.inUse {
		if !want[a] {
			delete(w.inUse, a)
			if err := w.change(a, false); err != nil {
				w.onErr(err)
			}
		}
	}
	for a := range want {
		if w.inUse[a] {
			continue
		}
		if err := w.change(a, true); err != nil {
			w.onErr(err)
			continue
		}
		w.inUse[a] = true
	}
}

// usable returns the addresses of device name that can be bound now; none
// when the device is missing or down.
func usable(name string) (map[netip.Addr]bool, error) {
	out := make(map[netip.Addr]bool)
	link, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return out, nil
		}
		return nil, fmt.Errorf("follow %s: %w", name, err)
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		return out, nil
	}
	list, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("follow %s: list addresses: %w", name, err)
	}
	for _, a := range list {
		if a.Flags&ifaTentative != 0 {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if ip.Is6() && ip.IsLinkLocalUnicast() {
			ip = ip.WithZone(name)
		}
		out[ip] = true
	}
	return out, nil
}

// Close stops following; addresses in use are not reported as gone.
func (w *Watcher) Close() {
	close(w.done)
	w.wg.Wait()
}
