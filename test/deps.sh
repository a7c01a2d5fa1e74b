#!/bin/sh
# Installs the Debian packages sluice's tests need, when they are missing.
# Used by `make test`, `make test-cross` and .ci/run. Without root or apt-get
# it only reports what is missing; the tests that need it then skip and say why.
set -u

# command:package pairs
need="socat:socat iperf3:iperf3 ip:iproute2 prlimit:util-linux curl:curl
qemu-aarch64-static:qemu-user-static qemu-mips-static:qemu-user-static
qemu-mipsel-static:qemu-user-static qemu-arm-static:qemu-user-static
shellcheck:shellcheck nft:nftables"

missing=""
for pair in $need; do
	cmd=${pair%%:*}
	pkg=${pair#*:}
	command -v "$cmd" >/dev/null 2>&1 && continue
	case " $missing " in *" $pkg "*) ;; *) missing="$missing $pkg" ;; esac
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
	echo "deps: missing packages:$missing (not root or no apt-get: tests that need them will skip)" >&2
	exit 0
fi

echo "deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
# A mirror caught mid-sync can fail one index; retry, then judge by the install.
for try in 1 2 3; do
	apt-get update -qq && break
	echo "deps: apt-get update failed (try $try), retrying" >&2
	sleep 3
done
# shellcheck disable=SC2086
if ! apt-get install -y -qq --no-install-recommends $missing >/dev/null; then
	echo "deps: apt-get install$missing failed; tests that need them will skip" >&2
fi
exit 0
