# sluice build, test and release targets. `make help` lists them.
GO       ?= go
# The release version is the VERSION file (the OpenWrt and Buildroot packages
# must agree with it); the commit comes from git.
VERSION  ?= $(shell cat VERSION 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
BUILD    := CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)'

# make run: sluice on RUN_LISTEN in front of the demo backend on RUN_BACKEND.
RUN_LISTEN  ?= 127.0.0.1:8080
RUN_BACKEND ?= 127.0.0.1:8081

# Cross targets: name GOARCH GOARM/GOMIPS setting.
CROSS := amd64:amd64: arm64:arm64: armv7:arm:GOARM=7 armv5:arm:GOARM=5 \
         mipsle:mipsle:GOMIPS=softfloat mips:mips:GOMIPS=softfloat mips64le:mips64le:GOMIPS64=softfloat
# test-cross: GOARCH, extra env and the qemu-user emulator for it.
QEMU := arm64::qemu-aarch64-static arm:GOARM=7:qemu-arm-static \
        mipsle:GOMIPS=softfloat:qemu-mipsel-static mips:GOMIPS=softfloat:qemu-mips-static

.PHONY: help build cross size test test-unit test-e2e test-cross run bench deps lint clean

help:
	@echo 'make run         build sluice and start it in front of a demo backend'
	@echo 'make test        install test packages if missing, lint, unit and end-to-end tests'
	@echo 'make test-cross  unit tests for arm64, arm, mipsle and mips under qemu-user'
	@echo 'make build       bin/sluice for this machine'
	@echo 'make cross       static stripped binaries for every router target into dist/'
	@echo 'make size        the size in bytes of every cross-built binary'
	@echo 'make bench       sluice vs HAProxy, nginx, socat and plain Go; HTTP proxy and cache vs squid and tinyproxy'

build:
	$(BUILD) -o bin/sluice ./cmd/sluice

cross:
	@mkdir -p dist
	@set -e; for t in $(CROSS); do \
		name=$${t%%:*}; rest=$${t#*:}; arch=$${rest%%:*}; extra=$${rest#*:}; \
		echo "cross $$name"; \
		env GOOS=linux GOARCH=$$arch $$extra $(BUILD) -o dist/sluice-linux-$$name ./cmd/sluice; \
	done

size: cross
	@printf '%-28s %10s\n' binary bytes
	@for f in dist/sluice-linux-*; do printf '%-28s %10s\n' "$$(basename $$f)" "$$(stat -c %s $$f)"; done

deps:
	@./test/deps.sh

lint:
	@out=$$(gofmt -l cmd pkg test); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

test: deps lint test-unit test-e2e

test-unit:
	$(GO) test -count=1 ./pkg/... ./cmd/...

test-e2e: build
	SLUICE_BIN=$(CURDIR)/bin/sluice $(GO) test -count=1 -timeout 10m ./test/...

test-cross: deps
	@set -e; for t in $(QEMU); do \
		arch=$${t%%:*}; rest=$${t#*:}; extra=$${rest%%:*}; emu=$${rest#*:}; \
		command -v $$emu >/dev/null || { echo "test-cross: $$emu missing (apt-get install qemu-user-static)"; exit 1; }; \
		echo "== test-cross $$arch ($$emu)"; \
		env GOARCH=$$arch $$extra CGO_ENABLED=0 $(GO) test -count=1 -exec $$emu ./pkg/...; \
	done

run: build
	@$(GO) build -o bin/demo-backend ./test/demo
	@echo "Starting the demo backend on $(RUN_BACKEND) and sluice on $(RUN_LISTEN) -> $(RUN_BACKEND)."
	@echo "Try it from another terminal:"
	@echo "  curl http://$(RUN_LISTEN)/                    # hello through sluice"
	@echo "  curl -s http://$(RUN_LISTEN)/bytes/100000000 | wc -c   # 100 MB relayed"
	@echo "  curl --data-binary @README.md http://$(RUN_LISTEN)/     # POST echoed back"
	@echo "Stop with Ctrl-C."
	@bin/demo-backend -listen $(RUN_BACKEND) & demo=$$!; \
		trap 'kill $$demo 2>/dev/null' EXIT INT TERM; \
		bin/sluice forward $(RUN_LISTEN) $(RUN_BACKEND)

# make bench: sluice against HAProxy, nginx stream, socat and plain Go on
# loopback, and the HTTP proxy and cache against squid and tinyproxy
# (test/bench); BENCH_FLAGS=-reps 1 -dur 2s for a quick look,
# BENCH_FLAGS='-figures http,cache' for the HTTP figures only.
BENCH_FLAGS ?=
bench: build cross
	@./test/deps.sh
	@missing=""; for c in haproxy nginx socat iperf3 squid tinyproxy microsocks danted; do command -v $$c >/dev/null || missing="$$missing $$c"; done; \
	[ -f /usr/lib/nginx/modules/ngx_stream_module.so ] || missing="$$missing libnginx-mod-stream"; \
	if [ -n "$$missing" ]; then \
		echo "bench: installing the peers it compares against:$$missing"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy nginx-light libnginx-mod-stream socat iperf3 squid tinyproxy microsocks dante-server >/dev/null || \
		{ echo "bench: could not install haproxy nginx-light libnginx-mod-stream socat iperf3 squid tinyproxy microsocks dante-server; install them and rerun"; exit 1; }; \
	fi
	$(GO) build -o bin/bench ./test/bench
	./bin/bench -sluice bin/sluice -dist dist -out bench-results.md $(BENCH_FLAGS)
	@echo "bench: results in bench-results.md (copy a full run into docs/benchmarks.md with the command)"
	$(GO) test -run '^$$' -bench . -benchtime 2s ./pkg/relay/

clean:
	rm -rf bin dist

# Boards: the cross-built sluice on emulated ARM and MIPS kernels under
# qemu-system (TCG), checked from inside the guest. board/README.md.
BOARD  ?= aarch64-virt
BOARDS := aarch64-virt armv7-virt mipsel-malta

.PHONY: board-test board-test-all

board-test:
	SLUICE_LDFLAGS='$(LDFLAGS)' ./board/run.sh $(BOARD)

board-test-all:
	@set -e; for b in $(BOARDS); do $(MAKE) --no-print-directory board-test BOARD=$$b; done

# check-scripts: sh -n and shellcheck on the init scripts (also run by the
# end-to-end tests in test/initd_scripts_test.go).
.PHONY: check-scripts
check-scripts:
	@for s in init.d/S50sluice init.d/sluice.init; do sh -n $$s && shellcheck --shell=sh $$s || exit 1; done
	@echo "check-scripts: OK"

# make generate: compile bpf/*.c with cilium/ebpf's bpf2go into the
# little- and big-endian objects and Go bindings committed in
# pkg/telemetry. The compiler is pinned: another clang emits other bytes,
# and CI (.ci/run) fails when regenerating leaves a diff. Needs Debian's
# clang-14, llvm-14 and libbpf-dev (bpf/README.md).
BPF_CLANG   ?= clang-14
BPF_STRIP   ?= llvm-strip-14
BPF_CFLAGS  := -O2 -g -Wall -Werror -I/usr/include/$(shell $(GO) env GOARCH | sed 's/amd64/x86_64/;s/arm64/aarch64/')-linux-gnu
EBPF_VERSION = $(shell $(GO) list -m -f '{{.Version}}' github.com/cilium/ebpf)

.PHONY: generate
generate:
	@command -v $(BPF_CLANG) >/dev/null || { echo "generate: $(BPF_CLANG) missing (apt-get install clang-14 llvm-14 libbpf-dev)"; exit 1; }
	cd pkg/telemetry && $(GO) run github.com/cilium/ebpf/cmd/bpf2go@$(EBPF_VERSION) \
		-cc $(BPF_CLANG) -strip $(BPF_STRIP) -cflags '$(BPF_CFLAGS)' \
		-target bpfel,bpfeb -tags '!nobpf' -go-package telemetry \
		-type thread_bytes -type sock_stats \
		telemetry ../../bpf/telemetry.c

# fuzz-config: fuzz the UCI config parser (seed corpus in
# pkg/config/testdata/fuzz/FuzzParse). FUZZTIME=5m for a longer run.
FUZZTIME ?= 30s
.PHONY: fuzz-config
fuzz-config:
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME) ./pkg/config/
