# otaflow: `make demo` runs the whole system locally; `make test` runs every test.
SHELL := /bin/bash
GO ?= go
# mosquitto installs to /usr/sbin, which a non-root PATH may lack.
export PATH := /usr/sbin:$(PATH)
# Packages that do not link the Temporal server get the race detector; the server-linking
# end-to-end package builds once, without it (it is the slow build).
RACE_PKGS = $(shell $(GO) list ./... | grep -vE '/internal/(stack|devserver)$$|/starter$$')

.PHONY: bench-quick demo test deps vet unit e2e compose-check build bench chaos

demo:
	$(GO) run ./starter demo --devices 50

# deps installs what the tests need beyond Go: Debian's mosquitto (a real broker to test
# against), PostgreSQL (the production store, for the jobs service and Temporal), the AWS CLI,
# docker-compose (to validate docker-compose.yml without an engine) and systemd's
# systemd-analyze (to rate the agent unit's sandbox), iproute2 (network namespaces for the
# fault tests), Prometheus (it scrapes the jobs service's metrics in a test), dpkg-deb and
# dpkg-repack (the deb update module's test builds packages; the module keeps one installed by
# hand), GRUB's grub-editenv and U-Boot's fw_setenv (the A/B
# root filesystem module's bootloader environments) and podman (the container module runs real
# containers).
deps:
	@missing=""; \
	command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	[ -x /usr/bin/aws ] || missing="$$missing awscli"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing="$$missing postgresql"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	command -v ip >/dev/null || [ -x /usr/sbin/ip ] || missing="$$missing iproute2"; \
	[ -x /usr/bin/prometheus ] || missing="$$missing prometheus"; \
	command -v dpkg-deb >/dev/null || missing="$$missing dpkg"; \
	command -v dpkg-repack >/dev/null || missing="$$missing dpkg-repack"; \
	command -v grub-editenv >/dev/null || missing="$$missing grub-common"; \
	command -v fw_setenv >/dev/null || missing="$$missing libubootenv-tool"; \
	command -v podman >/dev/null || missing="$$missing podman"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	@# the walk on a fresh Debian device (internal/stack/devicewalk_test.go): QEMU without its
	@# desktop recommends, and debootstrap
	@vm=""; \
	command -v qemu-system-x86_64 >/dev/null || vm="$$vm qemu-system-x86"; \
	command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || vm="$$vm debootstrap"; \
	if [ -n "$$vm" ]; then \
	  echo "installing:$$vm"; \
	  if [ "$$(id -u)" != 0 ]; then SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$vm >/dev/null; \
	fi

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	# the agent must build for the ARM devices `make build` ships it to
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -o /dev/null ./agent
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 $(GO) build -o /dev/null ./agent
	# workflows/ must stay deterministic (no time.Now, goroutines, map ranging, I/O)
	$(GO) run go.temporal.io/sdk/contrib/tools/workflowcheck@v0.6.0 ./workflows/...

# The tests check every job the jobs store serves from its decode cache against a fresh decode
# (internal/localiot/store/jobcache.go).
unit:
	OTAFLOW_VERIFY_JOB_CACHE=1 $(GO) test -race -count=1 $(RACE_PKGS)

e2e:
	OTAFLOW_VERIFY_JOB_CACHE=1 $(GO) test -count=1 -timeout 30m ./internal/stack/... ./internal/devserver/ ./starter/

# compose-check validates docker-compose.yml without an engine and checks each image tag
# against its pin (internal/deploycheck).
compose-check:
	POSTGRES_PASSWORD=check MQTT_SERVICE_PASSWORD=check OTAFLOW_ACCESS_KEY_ID=check OTAFLOW_SECRET_ACCESS_KEY=check \
	  OTAFLOW_PUBLIC_URL=https://ota.example.com OTAFLOW_CONSOLE_PASSWORD=check OTAFLOW_WEBHOOK_SECRET=check docker-compose -f docker-compose.yml config -q
	$(GO) test -count=1 ./internal/deploycheck/
	@echo "docker-compose.yml is valid and its images are the pinned ones"

# Prerequisites run in order: tools, static checks, then race-checked unit and protocol tests
# and the end-to-end tests on the real stack, beside one PostgreSQL server that every test
# package shares (withpg starts it and passes its address in OTAFLOW_TEST_POSTGRES).
test: deps vet compose-check
	$(GO) run ./internal/pgtest/withpg -- $(MAKE) --no-print-directory unit e2e

# chaos runs the long fault suite against the production shape: during one rollout the
# leading replica is frozen for 60 s, then partitioned from PostgreSQL for 2 min through its
# network namespace, then SIGKILLed; then PostgreSQL goes down for 20 s and mosquitto is
# SIGKILLed. The short version (15 s, 20 s) is part of `make test`. Needs root (namespaces).
chaos: deps
	$(GO) run ./internal/pgtest/withpg -- env OTAFLOW_CHAOS=1 $(GO) test -count=1 -timeout 30m -run '^TestReplicaFaults$$' -v ./internal/stack/

build:
	mkdir -p bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags="-s -w" -o bin/otaflow-agent ./agent
	# the agent for devices: 64-bit ARM (Raspberry Pi OS 64-bit, aarch64), 32-bit ARMv7 (armv7l)
	# and ARMv6 (Pi Zero, Pi 1: armv6l); docs/device.md
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags="-s -w" -o bin/otaflow-agent-linux-aarch64 ./agent
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 $(GO) build -trimpath -ldflags="-s -w" -o bin/otaflow-agent-linux-armv7l ./agent
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=6 $(GO) build -trimpath -ldflags="-s -w" -o bin/otaflow-agent-linux-armv6l ./agent
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags="-s -w" -o bin/otaflow-agent-linux-x86_64 ./agent
	$(GO) build -o bin/starter ./starter
	$(GO) build -o bin/worker ./worker
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags="-s -w" -o bin/jobs-service ./jobs-service

# bench prints the measured figures with their baselines (docs/benchmarks.md); bench-quick is
# a two-minute version.
bench:
	$(GO) run ./starter bench
bench-quick:
	$(GO) run ./starter bench --quick
