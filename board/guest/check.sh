#!/bin/sh
# The checks run inside every board guest (started by /init). Each prints
# "BOARD-CHECK ok: ..." or "BOARD-CHECK FAIL: ..."; the last line is
# "BOARD-RESULT: PASS" only if none failed. No check asserts a duration: the
# malta guest's clock jumps under emulation. Throughput lines are
# informational ("BOARD-MEASURE").
board=$(cat /board)
failed=0
pids=""
ok() { echo "BOARD-CHECK ok: $*"; }
bad() { echo "BOARD-CHECK FAIL: $*"; failed=1; }
MiB=1048576

# bg NAME CMD...: run CMD in the background, output in /tmp/NAME.log.
bg() {
	local log=/tmp/$1.log
	shift
	"$@" >"$log" 2>&1 &
	pids="$pids $!"
	last=$!
}

# wait_log FILE TEXT: wait until FILE contains TEXT (at most ~60 s of guest time).
wait_log() {
	i=0
	while ! grep -q "$2" "$1" 2>/dev/null; do
		i=$((i + 1))
		[ $i -gt 600 ] && return 1
		sleep 0.1
	done
}

# cpu_ticks PID: user+system clock ticks the process used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

stop_all() {
	for p in $pids; do kill "$p" 2>/dev/null; done
	for p in $pids; do wait "$p" 2>/dev/null; done
	pids=""
}

echo "BOARD-INFO: $board, kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) cpu, $(sluice version 2>&1 | head -n 1)"

# 1. Before the modules are loaded the kernel has no AF_VSOCK: sluice must
# refuse with the plain reason, on either side of a forward, not panic.
for args in "vsock:any:5000 127.0.0.1:7001" "127.0.0.1:7200 vsock:1:5000"; do
	# shellcheck disable=SC2086
	out=$(timeout 60 sluice forward $args 2>&1)
	rc=$?
	case $out in
	*panic*) bad "sluice forward $args panicked: $out" ;;
	*"vsock is not supported by this kernel"*)
		if [ $rc -ne 0 ] && [ $rc -ne 143 ]; then
			ok "without vsock modules, sluice forward $args exits $rc: $(echo "$out" | tail -n 1)"
		else
			bad "sluice forward $args printed the reason but exited $rc"
		fi ;;
	*) bad "sluice forward $args without vsock (exit $rc): $out" ;;
	esac
done

# 2. The vsock modules, in dependency order.
loaded=1
for m in $(cat /modules/order); do
	if ! out=$(insmod "/modules/$m" 2>&1); then
		bad "insmod $m: $out"
		loaded=0
	fi
done
[ $loaded = 1 ] && ok "insmod $(tr '\n' ' ' </modules/order)"

# 3. Go tests on the real guest kernel: the unit tests of pkg/sys and
# pkg/endpoint, and their TestIntegration* tests that open AF_VSOCK sockets.
export SLUICE_BOARD=1
for t in sys endpoint; do
	if out=$(cd /tmp && "/tests/$t.test" -test.v -test.count=1 -test.timeout 300s 2>&1); then
		ok "go test pkg/$t: $(echo "$out" | grep -c '^--- PASS') passed, $(echo "$out" | grep -c '^--- SKIP') skipped, integration: $(echo "$out" | grep -E '^--- (PASS|FAIL): TestIntegration' | tr '\n' ' ')"
	else
		echo "$out" | tail -n 30
		bad "go test pkg/$t"
	fi
	echo "$out" | grep -o 'VSOCK-SPLICE: .*' | sed 's/^/BOARD-MEASURE: /'
done

# 4. A TCP forward relays 64 MiB up and 8 MiB down byte-exact, with
# half-close (the sink answers only after the client's FIN).
bg sink boardcheck sink -listen 127.0.0.1:7001 -down $((8 * MiB))
boardcheck wait 127.0.0.1:7001 || bad "the sink did not start: $(cat /tmp/sink.log)"
bg fwd sluice forward 127.0.0.1:7000 127.0.0.1:7001
if wait_log /tmp/fwd.log listening &&
	out=$(boardcheck send -connect 127.0.0.1:7000 -up $((64 * MiB)) -down $((8 * MiB)) 2>&1); then
	ok "tcp forward: $out"
else
	bad "tcp forward: $out; sluice said: $(cat /tmp/fwd.log)"
fi

# 5. TCP -> vsock -> TCP through two sluice instances over vsock loopback
# (CID 1), byte-exact both ways, with half-close.
bg vsrv sluice forward vsock:any:5000 127.0.0.1:7001
bg vcli sluice forward 127.0.0.1:7100 vsock:1:5000
if wait_log /tmp/vsrv.log listening && wait_log /tmp/vcli.log listening &&
	out=$(boardcheck send -connect 127.0.0.1:7100 -up $((64 * MiB)) -down $((8 * MiB)) 2>&1); then
	ok "tcp -> vsock -> tcp: $out"
else
	bad "tcp -> vsock -> tcp: $out; sluice said: $(cat /tmp/vsrv.log /tmp/vcli.log)"
fi
grep -h 'level=ERROR\|level=WARN\|panic' /tmp/fwd.log /tmp/vsrv.log /tmp/vcli.log && bad "sluice logged warnings or errors above"
stop_all

# 6. Measurements (informational): splice against the copy path
# (--max-pipes -1) through the vsock bridge, no hashing, 64 MiB up. CPU is
# the ticks both sluice processes used.
measure() { # NAME PORT-OFFSET EXTRA-FLAGS
	local name=$1 p=$2
	shift 2
	bg msink boardcheck sink -hash=false -listen 127.0.0.1:$((7301 + p))
	boardcheck wait 127.0.0.1:$((7301 + p)) >/dev/null 2>&1
	bg msrv sluice forward "$@" vsock:any:$((5301 + p)) 127.0.0.1:$((7301 + p))
	srv=$last
	bg mcli sluice forward "$@" 127.0.0.1:$((7300 + p)) vsock:1:$((5301 + p))
	cli=$last
	wait_log /tmp/msrv.log listening
	wait_log /tmp/mcli.log listening
	before=$(($(cpu_ticks $srv) + $(cpu_ticks $cli)))
	if out=$(boardcheck send -hash=false -connect 127.0.0.1:$((7300 + p)) -up $((64 * MiB)) 2>&1); then
		after=$(($(cpu_ticks $srv) + $(cpu_ticks $cli)))
		echo "BOARD-MEASURE: vsock bridge, $name: $(echo "$out" | sed 's/.*; up //'), sluice CPU $((after - before)) ticks of 1/$(getconf CLK_TCK 2>/dev/null || echo 100) s for 64 MiB"
	else
		bad "measure $name: $out"
	fi
	stop_all
}
measure splice 0
measure copy 10 --max-pipes -1

# 7. The sysvinit script, when the repository has one.
if [ -x /etc/init.d/S50sluice ]; then
	echo "BOARD-INFO: init.d/S50sluice is present but this board does not drive it yet"
else
	echo "BOARD-INFO: init.d/S50sluice is not in the repository yet: start/reload/stop not checked"
fi

if [ $failed = 0 ]; then
	echo "BOARD-RESULT: PASS"
else
	echo "BOARD-RESULT: FAIL"
fi
