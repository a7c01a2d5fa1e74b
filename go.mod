module github.com/sluice-proxy/sluice

go 1.26.0

require (
	github.com/mdlayher/vsock v1.4.0
	github.com/vishvananda/netlink v1.3.1
	golang.org/x/crypto v0.58.0
	golang.org/x/sys v0.49.0
)

require (
	github.com/cilium/ebpf v0.22.0
	github.com/mdlayher/socket v0.8.0 // indirect
	github.com/vishvananda/netns v0.0.5
	golang.org/x/net v0.62.0
	golang.org/x/sync v0.24.0 // indirect
)
