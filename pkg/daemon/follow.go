package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/sluice-proxy/sluice/pkg/config"
	"github.com/sluice-proxy/sluice/pkg/endpoint"
	"github.com/sluice-proxy/sluice/pkg/netif"
	"github.com/sluice-proxy/sluice/pkg/ratelog"
)

// follower keeps a service's listeners on the addresses of its interface.
type follower struct {
	w *netif.Watcher
}

// listenerSet is a service that listens on several addresses
// (forward.Service, httpproxy.Service).
type listenerSet interface {
	AddListener(ctx context.Context, a endpoint.Addr) (string, error)
	RemoveListener(a endpoint.Addr) bool
}

// followInterface starts listening on every usable address of iface, on
// listen's port, and follows them; kind and name label the logs and the
// error.
// An OpenWrt logical name ('wan') defined in config.NetworkPath is
// followed through its device ('pppoe-wan'); logical names have no '-',
// so a device name ('br-lan') is never mistaken for one.
func followInterface(kind, name, iface string, listen endpoint.Addr, svc listenerSet, log *slog.Logger) (*follower, error) {
	device := iface
	if dev, ok := config.DeviceOf(iface, config.NetworkPath); ok {
		device = dev
	}
	log = log.With(kind, name, "interface", device)
	if device != iface {
		log.Info("logical interface resolved", "logical", iface, "device", device)
	}
	warn := &ratelog.Logger{Out: log}
	change := func(ip netip.Addr, up bool) error {
		a := endpoint.Addr{Network: listen.Network, Host: ip.String(), Port: listen.Port}
		if !up {
			if svc.RemoveListener(a) {
				log.Info("address gone: stopped listening", "addr", a.String())
			}
			return nil
		}
		addr, err := svc.AddListener(context.Background(), a)
		if err != nil {
			return err
		}
		log.Info("listening", "addr", addr)
		return nil
	}
	filtered := func(ip netip.Addr, up bool) error {
		switch {
		case listen.Network == endpoint.TCP4 && !ip.Is4(),
			listen.Network == endpoint.TCP6 && !ip.Is6():
			return nil
		}
		return change(ip, up)
	}
	w, err := netif.Follow(device, filtered, func(err error) {
		warn.Log(slog.LevelWarn, "interface", "err", err)
	})
	if err != nil {
		return nil, fmt.Errorf("%s '%s': %w", kind, name, err)
	}
	log.Info("following interface", "port", listen.Port)
	return &follower{w: w}, nil
}

func (fl *follower) close() { fl.w.Close() }
