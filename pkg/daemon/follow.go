package daemon

import (
	"context"
	"log/slog"
	"net/netip"

	"github.com/sluice-proxy/sluice/pkg/config"
	"github.com/sluice-proxy/sluice/pkg/endpoint"
	"github.com/sluice-proxy/sluice/pkg/forward"
	"github.com/sluice-proxy/sluice/pkg/netif"
	"github.com/sluice-proxy/sluice/pkg/ratelog"
)

// follower keeps a forward's listeners on the addresses of its interface.
type follower struct {
	w *netif.Watcher
}

// followInterface starts listening on every usable address of
// f.Interface, on f.Listen's port, and follows them.
// An OpenWrt logical name ('wan') defined in config.NetworkPath is
// followed through its device ('pppoe-wan'); logical names have no '-',
// so a device name ('br-lan') is never mistaken for one.
func followInterface(f config.Forward, fwd *forward.Service, log *slog.Logger) (*follower, error) {
	device := f.Interface
	if dev, ok := config.DeviceOf(f.Interface, config.NetworkPath); ok {
		device = dev
	}
	log = log.With("forward", f.Name, "interface", device)
	if device != f.Interface {
		log.Info("logical interface resolved", "logical", f.Interface, "device", device)
	}
	warn := &ratelog.Logger{Out: log}
	change := func(ip netip.Addr, up bool) error {
		a := endpoint.Addr{Network: f.Listen.Network, Host: ip.String(), Port: f.Listen.Port}
		if !up {
			if fwd.RemoveListener(a) {
				log.Info("address gone: stopped listening", "addr", a.String())
			}
			return nil
		}
		addr, err := fwd.AddListener(context.Background(), a)
		if err != nil {
			return err
		}
		log.Info("listening", "addr", addr)
		return nil
	}
	filtered := func(ip netip.Addr, up bool) error {
		switch {
		case f.Listen.Network == endpoint.TCP4 && !ip.Is4(),
			f.Listen.Network == endpoint.TCP6 && !ip.Is6():
			return nil
		}
		return change(ip, up)
	}
	w, err := netif.Follow(device, filtered, func(err error) {
		warn.Log(slog.LevelWarn, "interface", "err", err)
	})
	if err != nil {
		return nil, err
	}
	return &follower{w: w}, nil
}

func (fl *follower) close() { fl.w.Close() }
