#!/bin/sh
# board/run.sh BOARD: boot the cross-built sluice on an emulated board and
# run the in-guest checks (board/guest/check.sh). Exits 0 only when the guest
# prints "BOARD-RESULT: PASS". See board/README.md.
#
# Environment:
#   BOARD_CACHE    downloads and builds (default .cache/board, git-ignored)
#   BOARD_TIMEOUT  seconds the guest may run before it is killed (default 600)
#   BOARD_LOG      where the guest console goes (default $BOARD_CACHE/BOARD.log)
#   SLUICE_LDFLAGS Go linker flags for sluice (make passes its own)
set -eu

board=${1:?usage: board/run.sh aarch64-virt|armv7-virt|mipsel-malta}
top=$(cd "$(dirname "$0")/.." && pwd)
cache=${BOARD_CACHE:-$top/.cache/board}
timeout=${BOARD_TIMEOUT:-600}
log=${BOARD_LOG:-$cache/$board.log}
ldflags=${SLUICE_LDFLAGS:--s -w}

# One line per board: Debian architecture, kernel flavour, GOARCH and its
# extra setting, qemu binary, machine options, console.
case $board in
aarch64-virt)
	debarch=arm64 flavour=arm64 goarch=arm64 goextra=GOARM64=v8.0
	qemu=qemu-system-aarch64 machine="-M virt -cpu cortex-a57 -smp 2 -m 512M" console=ttyAMA0 ;;
armv7-virt)
	debarch=armhf flavour=armmp-lpae goarch=arm goextra=GOARM=7
	qemu=qemu-system-arm machine="-M virt -smp 2 -m 512M" console=ttyAMA0 ;;
mipsel-malta)
	debarch=mipsel flavour=4kc-malta goarch=mipsle goextra=GOMIPS=softfloat
	qemu=qemu-system-mipsel machine="-M malta -m 256M -vga none" console=ttyS0 ;;
*)
	echo "board: unknown board '$board' (want aarch64-virt, armv7-virt or mipsel-malta)" >&2
	exit 2 ;;
esac

say() { echo "board $board: $*" >&2; }
die() { say "$*"; exit 1; }

# Host tools: qemu-system-*, cpio and depmod (kmod). Installed when root.
host_tools() {
	missing=""
	command -v "$qemu" >/dev/null 2>&1 || missing="$missing $(case $qemu in *mips*) echo qemu-system-mips ;; *) echo qemu-system-arm ;; esac)"
	command -v cpio >/dev/null 2>&1 || missing="$missing cpio"
	command -v depmod >/dev/null 2>&1 || [ -x /sbin/depmod ] || missing="$missing kmod"
	[ -z "$missing" ] && return 0
	[ "$(id -u)" = 0 ] || die "missing host packages:$missing (install them as root)"
	say "installing$missing"
	apt_update
	# shellcheck disable=SC2086
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null ||
		die "apt-get install$missing failed"
}

# apt-get update, retried: a mirror caught mid-sync can fail one index while
# everything needed still resolves, so success is judged by the downloads.
apt_update() {
	for try in 1 2 3; do
		apt-get update -qq >/dev/null 2>&1 && return 0
		say "apt-get update failed (try $try); retrying"
		sleep 3
	done
	say "apt-get update kept failing; trying the downloads anyway"
}

# The kernel and busybox-static for the board, unpacked once into the cache.
fetch() {
	sysroot=$cache/$debarch/root
	[ -f "$cache/$debarch/.unpacked" ] && return 0
	[ "$(id -u)" = 0 ] || die "the $debarch kernel is not in $cache yet: run once as root to download it"
	mkdir -p "$cache/$debarch/debs"
	if ! dpkg --print-foreign-architectures | grep -qx "$debarch"; then
		say "dpkg --add-architecture $debarch"
		dpkg --add-architecture "$debarch"
		apt_update
	fi
	kpkg=$(apt-cache depends "linux-image-$flavour:$debarch" 2>/dev/null |
		sed -n 's/^ *Depends: \(linux-image-[0-9][^:]*\).*/\1/p' | head -n 1)
	if [ -z "$kpkg" ]; then
		apt_update
		kpkg=$(apt-cache depends "linux-image-$flavour:$debarch" 2>/dev/null |
			sed -n 's/^ *Depends: \(linux-image-[0-9][^:]*\).*/\1/p' | head -n 1)
	fi
	[ -n "$kpkg" ] || die "cannot resolve linux-image-$flavour:$debarch (apt-get update failed?)"
	say "downloading $kpkg:$debarch busybox-static:$debarch"
	(cd "$cache/$debarch/debs" && rm -f ./*.deb &&
		apt-get download -q -o APT::Sandbox::User=root "$kpkg:$debarch" "busybox-static:$debarch" >/dev/null) ||
		die "apt-get download $kpkg:$debarch busybox-static:$debarch failed"
	rm -rf "$sysroot"
	mkdir -p "$sysroot"
	for deb in "$cache/$debarch/debs"/*.deb; do dpkg-deb -x "$deb" "$sysroot"; done
	touch "$cache/$debarch/.unpacked"
}

# sluice, the guest helper and the integration test binaries for the board.
build() {
	out=$cache/build/$board
	mkdir -p "$out"
	say "building for $goarch ($goextra)"
	cd "$top"
	env GOOS=linux GOARCH=$goarch $goextra CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out/sluice" ./cmd/sluice
	env GOOS=linux GOARCH=$goarch $goextra CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/boardcheck" ./board/guest/boardcheck
	for pkg in sys endpoint; do
		env GOOS=linux GOARCH=$goarch $goextra CGO_ENABLED=0 go test -c -trimpath -ldflags "-s -w" -o "$out/$pkg.test" "./pkg/$pkg"
	done
}

# The initramfs: busybox, the vsock modules (in /modules, not /lib/modules,
# so the kernel cannot autoload vsock before the "not supported" check),
# sluice, the helper, the tests, the init script and the checks.
pack() {
	kver=""
	for d in "$sysroot"/lib/modules/*; do [ -d "$d" ] && kver=${d##*/} && break; done
	[ -n "$kver" ] || die "no kernel modules in $sysroot"
	kernel=$sysroot/boot/vmlinuz-$kver
	[ -f "$kernel" ] || die "no kernel at $kernel"
	[ -f "$sysroot/lib/modules/$kver/modules.dep" ] || depmod -b "$sysroot" "$kver" ||
		/sbin/depmod -b "$sysroot" "$kver"
	initrd=$cache/build/$board/initrd.gz
	stage=$cache/build/$board/stage
	rm -rf "$stage"
	mkdir -p "$stage/bin" "$stage/modules" "$stage/tests" "$stage/etc/init.d" \
		"$stage/proc" "$stage/sys" "$stage/dev" "$stage/tmp" "$stage/root"
	cp "$sysroot/bin/busybox" "$stage/bin/busybox"
	# vsock_loopback and what it needs, in load order (modules.dep lists a
	# module's dependencies innermost last).
	dep=$(grep "/vsock_loopback.ko[^:]*:" "$sysroot/lib/modules/$kver/modules.dep") ||
		die "vsock_loopback is not in $kver's modules.dep"
	order=""
	for m in ${dep#*:}; do order="$m $order"; done
	order="$order ${dep%%:*}"
	: >"$stage/modules/order"
	for m in $order; do
		case $m in *.ko) ;; *) die "module $m is compressed; busybox insmod needs .ko" ;; esac
		cp "$sysroot/lib/modules/$kver/$m" "$stage/modules/"
		basename "$m" >>"$stage/modules/order"
	done
	cp "$out/sluice" "$out/boardcheck" "$stage/bin/"
	cp "$out/sys.test" "$out/endpoint.test" "$stage/tests/"
	cp "$top/board/guest/init" "$stage/init"
	cp "$top/board/guest/check.sh" "$stage/check.sh"
	if [ -f "$top/init.d/S50sluice" ]; then
		cp "$top/init.d/S50sluice" "$stage/etc/init.d/S50sluice"
	fi
	chmod 755 "$stage/init" "$stage/check.sh" "$stage/bin/"*
	echo "$board" >"$stage/board"
	(cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1) >"$initrd"
}

boot() {
	mkdir -p "$(dirname "$log")"
	say "booting $kver under $qemu (TCG; guest console in $log)"
	start=$(date +%s)
	# Each console line is stamped with the host's clock: the guest's is
	# not to be trusted, so BOARD-TIME marks are timed here.
	# shellcheck disable=SC2086
	timeout -k 10 "$timeout" "$qemu" $machine -accel tcg -nographic -no-reboot -nic none \
		-kernel "$kernel" -initrd "$initrd" \
		-append "console=$console panic=-1 loglevel=4" </dev/null 2>&1 |
		while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done >"$log" || true
	took=$(($(date +%s) - start))
	tr -d '\r' <"$log" | grep -a ' BOARD-' | cut -d' ' -f2- >&2 || true
	# BOARD-TIME: begin NAME ... BOARD-TIME: end NAME BYTES
	tr -d '\r' <"$log" | awk '$2 == "BOARD-TIME:" && $3 == "begin" { t[$4] = $1 }
		$2 == "BOARD-TIME:" && $3 == "end" && ($4 in t) {
			d = $1 - t[$4]
			printf "BOARD-MEASURE (host clock): %s: %d bytes in %.2f s, %.1f MB/s\n", $4, $5, d, $5 / 1e6 / d
		}' >&2
	if tr -d '\r' <"$log" | grep -aq ' BOARD-RESULT: PASS$'; then
		say "PASS in ${took}s (wall)"
		return 0
	fi
	tail -n 40 "$log" | tr -d '\r' | cut -d' ' -f2- >&2
	die "FAIL after ${took}s (wall): the guest did not report PASS (full console: $log)"
}

host_tools
fetch
build
pack
boot
