package config

import (
	"os"
	"strings"
)

// NetworkPath is OpenWrt's network config, where logical interface names
// ('lan', 'wan') are defined.
const NetworkPath = "/etc/config/network"

// DeviceOf resolves an OpenWrt logical interface name to the device
// carrying its addresses, from the network config at path: ppp-based
// protocols (pppoe, pppoa, 3g, l2tp, pptp) use the device PROTO-NAME that
// netifd creates; otherwise `option device` (OpenWrt 21.02 and later) or
// `option ifname`, or br-NAME for an old-style `option type 'bridge'`. It
// reports false when path has no such interface.
// A device '@other' (an alias such as wan6 on wan) follows other once.
func DeviceOf(logical, path string) (string, bool) {
	return deviceOf(logical, path, 1)
}

func deviceOf(logical, path string, aliases int) (string, bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", false
	}
	secs, _ := ParseUCI(path, data)
	for _, s := range secs {
		if s.Type != "interface" || s.Name != logical {
			continue
		}
		get := func(name string) string {
			if o := s.option(name); o != nil && len(o.Values) > 0 {
				return o.Values[0]
			}
			return ""
		}
		switch proto := get("proto"); proto {
		case "pppoe", "pppoa", "3g", "l2tp", "pptp", "ppp":
			return proto + "-" + logical, true
		}
		if get("type") == "bridge" {
			return "br-" + logical, true
		}
		for _, opt := range []string{"device", "ifname"} {
			v := strings.Fields(get(opt))
			switch {
			case len(v) == 0:
				continue
			case strings.HasPrefix(v[0], "@") && aliases > 0:
				return deviceOf(v[0][1:], path, aliases-1)
			case strings.HasPrefix(v[0], "@"):
				return "", false
			}
			return v[0], true
		}
		return "", false
	}
	return "", false
}
