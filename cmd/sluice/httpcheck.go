package main

import (
	"fmt"
	"io"

	"github.com/sluice-proxy/sluice/pkg/config"
)

// printHTTPSummary prints the http_proxy and user sections for `sluice
// check`.
func printHTTPSummary(w io.Writer, cfg *config.Config) {
	for _, h := range cfg.HTTPProxies {
		auth := "off"
		if h.Auth {
			auth = "on"
		}
		fmt.Fprintf(w, "http_proxy '%s': %s, auth %s, %d rules (default %s), max_conns %s", h.Name, h.Listen, auth,
			len(h.ACL.Rules), h.ACL.Default, orNone(h.MaxConns))
		if h.Transparent {
			fmt.Fprint(w, ", transparent")
		}
		if n := len(h.BlockURLs) + len(h.BlockWords); n > 0 {
			fmt.Fprintf(w, ", %d filters", n)
		}
		if h.CacheSize > 0 {
			fmt.Fprintf(w, ", cache %d bytes", h.CacheSize)
			if h.CacheDir != "" {
				fmt.Fprintf(w, " and %s", h.CacheDir)
			}
		}
		fmt.Fprintln(w)
	}
	for _, name := range cfg.HTTPDisabled {
		fmt.Fprintf(w, "http_proxy '%s': disabled\n", name)
	}
	if len(cfg.Users) > 0 {
		fmt.Fprintf(w, "users: %d\n", len(cfg.Users))
	}
}
