#!/bin/sh
# shellcheck shell=dash
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
	local log="/tmp/$1.log"
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
# ... and `sluice check` says so with the file:line of the section.
printf "config forward 'vm'\n\toption listen 'vsock:any:5000'\n\tlist upstream '127.0.0.1:7001'\n" >/tmp/vsock-check.conf
out=$(sluice check -c /tmp/vsock-check.conf 2>&1)
rc=$?
case $out in
*"vsock-check.conf:1: forward 'vm': option 'listen': vsock is not supported by this kernel"*)
	[ $rc -ne 0 ] && ok "without vsock modules, sluice check exits $rc naming the line" ||
		bad "sluice check printed the reason but exited 0" ;;
*) bad "sluice check without vsock (exit $rc): $out" ;;
esac

# Informational: what `sluice check` says about a config with a vsock
# upstream on this kernel (the config check is the daemon's).
printf "config forward 'v'\n\toption listen '127.0.0.1:7200'\n\tlist upstream 'vsock:1:5000'\n" >/tmp/vsock.conf
out=$(timeout 60 sluice check -c /tmp/vsock.conf 2>&1)
echo "BOARD-INFO: without vsock, sluice check of a config with a vsock upstream exits $?: $(echo "$out" | tr '\n' ' ')"

# 2. The vsock modules, in dependency order.
loaded=1
while read -r m; do
	if ! out=$(insmod "/modules/$m" 2>&1); then
		bad "insmod $m: $out"
		loaded=0
	fi
done </modules/order
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
	echo "$out" | grep -o 'VSOCK-[A-Z]*[: ].*' | sed 's/^/BOARD-MEASURE: /'
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
# (--max-pipes -1), through the vsock bridge and through a plain TCP forward
# for comparison; no hashing, 64 MiB up. CPU is the clock ticks the sluice
# processes used (like wall times, not to be trusted on malta). The
# BOARD-TIME lines let the host time each run by its own clock.
measure() { # KIND(vsock|tcp) NAME PORT-OFFSET [SLUICE-FLAGS]
	local kind="$1" name="$2" p="$3" cpids
	shift 3
	bg msink boardcheck sink -hash=false -listen 127.0.0.1:$((7301 + p))
	boardcheck wait 127.0.0.1:$((7301 + p)) >/dev/null 2>&1
	if [ "$kind" = vsock ]; then
		bg msrv sluice forward "$@" vsock:any:$((5301 + p)) 127.0.0.1:$((7301 + p))
		cpids=$last
		wait_log /tmp/msrv.log listening
		bg mcli sluice forward "$@" 127.0.0.1:$((7300 + p)) vsock:1:$((5301 + p))
	else
		bg mcli sluice forward "$@" 127.0.0.1:$((7300 + p)) 127.0.0.1:$((7301 + p))
	fi
	cpids="$cpids $last"
	wait_log /tmp/mcli.log listening
	before=0
	for c in $cpids; do before=$((before + $(cpu_ticks "$c"))); done
	echo "BOARD-TIME: begin $kind-$name"
	if out=$(boardcheck send -hash=false -connect 127.0.0.1:$((7300 + p)) -up $((64 * MiB)) 2>&1); then
		echo "BOARD-TIME: end $kind-$name $((64 * MiB))"
		after=0
		for c in $cpids; do after=$((after + $(cpu_ticks "$c"))); done
		echo "BOARD-MEASURE: $kind, $name: $(echo "$out" | sed 's/.*; up //'), sluice CPU $((after - before)) ticks of 1/100 s for 64 MiB"
	else
		bad "measure $kind $name: $out"
	fi
	stop_all
}
measure vsock splice 0
measure vsock copy 10 --max-pipes -1
measure tcp splice 20
measure tcp copy 30 --max-pipes -1

# 7. The sysvinit script from init.d/ with the installed layout
# (/usr/bin/sluice, /etc/sluice.conf): start, reload to a config that adds
# a forward to a vsock upstream, stop. Traffic flows after each step.
conf() { # the body of /etc/sluice.conf after the global section, on stdin
	{
		printf "config sluice 'main'\n\toption control_socket '/var/run/sluice.sock'\n"
		printf "\toption log '/tmp/daemon.log'\n\toption grace '2s'\n\n"
		cat
	} >/etc/sluice.conf.tmp && mv /etc/sluice.conf.tmp /etc/sluice.conf
}
initd() { # ACTION: run the init script, show its output, fail unless OK
	if out=$(/etc/init.d/S50sluice "$1" 2>&1) && echo "$out" | grep -q OK; then
		ok "S50sluice $1: $out"
	else
		bad "S50sluice $1: $out; daemon log: $(tail -n 5 /tmp/daemon.log 2>/dev/null)"
	fi
}
through() { # WHAT PORT: 1 MiB up and down through 127.0.0.1:PORT
	if out=$(boardcheck send -connect "127.0.0.1:$2" -up $MiB -down $MiB 2>&1); then
		ok "$1: $out"
	else
		bad "$1: $out; daemon log: $(tail -n 5 /tmp/daemon.log 2>/dev/null)"
	fi
}
if [ -f /etc/init.d/S50sluice ]; then
	mkdir -p /usr/bin /var/run
	ln -sf /bin/sluice /usr/bin/sluice
	bg sink boardcheck sink -listen 127.0.0.1:7001 -down $MiB
	boardcheck wait 127.0.0.1:7001
	bg ivs sluice forward vsock:any:5400 127.0.0.1:7001
	wait_log /tmp/ivs.log listening
	conf <<'CONF'
config forward 'plain'
	option listen '127.0.0.1:7400'
	list upstream '127.0.0.1:7001'
CONF
	initd start
	through "after start, tcp forward from the config" 7400
	# The telemetry source the daemon chose on this kernel: eBPF programs
	# where it allows them, /proc otherwise; one log line says which.
	tel=$(grep -h 'msg=telemetry ' /tmp/daemon.log | head -n 1)
	case $tel in
	*source=*) ok "telemetry on $(uname -r): ${tel#*source=}" ;;
	*) bad "the daemon logged no telemetry source: $(grep -h telemetry /tmp/daemon.log | head -n 3)" ;;
	esac
	conf <<'CONF'
config forward 'plain'
	option listen '127.0.0.1:7400'
	list upstream '127.0.0.1:7001'

config forward 'tovsock'
	option listen '127.0.0.1:7401'
	list upstream 'vsock:1:5400'
CONF
	initd reload
	through "after reload, the new forward to vsock:1:5400" 7401
	through "after reload, the old forward" 7400
	initd stop
	if /etc/init.d/S50sluice status >/dev/null 2>&1; then
		bad "S50sluice status after stop: still running"
	else
		ok "S50sluice status after stop: stopped"
	fi
	stop_all
else
	echo "BOARD-INFO: init.d/S50sluice is not in the repository: start/reload/stop not checked"
fi

if [ $failed = 0 ]; then
	echo "BOARD-RESULT: PASS"
else
	echo "BOARD-RESULT: FAIL"
fi
