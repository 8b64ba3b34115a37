# The two commands a newcomer needs: `make image` and `make test` (both install what they need).
PROFILE  ?= edge-standard
HARDWARE ?= generic-x86_64-uefi
CLI      := node bin/geminik8s.js

.PHONY: deps image repro test test-unit typecheck lint bench bench-pair bench-failover bench-peers fault-matrix fault-kubernetes test-kubernetes-image test-upgrade test-upgrade-pair test-arm64 test-rpi4 bench-upgrade bench-memory bench-operator clean

deps:
	@sh builder/host-deps.sh

image: deps
	$(CLI) build --profile $(PROFILE) --hardware $(HARDWARE)

# Builds the commit twice (own clones, own caches, one after the other: about 2 x 4 min on a warm
# Go build cache) and compares the images; names the first differing file of each partition.
repro:
	@sh builder/host-deps.sh diffoscope-minimal
	PROFILE=$(PROFILE) HARDWARE=$(HARDWARE) node --import tsx builder/src/repro/repro.ts

test: deps typecheck lint
	@sh builder/host-deps.sh openssh-server chromium
	node test/run-suite.mjs

test-unit: deps
	npx ava test/unit

typecheck: deps
	npx tsc --noEmit

# Biome: formatting and lint rules (biome.jsonc); `npx biome check --write $(LINTED)` fixes what it can.
LINTED := builder firstboot test bench bin
lint: deps
	npx biome ci --colors=off $(LINTED)

bench: deps
	node --import tsx bench/build.ts

# Needs root (network namespaces); RUNS=5 by default.
bench-pair: deps
	node --import tsx bench/pair.ts

# Every fault of issue 4, three times each (make test runs each once).
fault-matrix: deps typecheck
	FAULT_REPS=3 node test/run-suite.mjs --concurrency 1 test/fault

# Faults a, b, c on a pair running Kubernetes, ConfigMaps through the API on the VIP (make test runs b).
fault-kubernetes: deps typecheck
	KUBERNETES_FAULTS=abc node test/run-suite.mjs --concurrency 1 test/fault/kubernetes.test.ts

# Two QEMU VMs of the default image as a Kubernetes pair: nodes Ready, pods, a Service across the
# boxes by DNS, the leader's power cut (needs root; too slow for make test, and for TCG on 2 cores).
test-kubernetes-image: deps typecheck
	node test/run-suite.mjs --concurrency 1 test/image/kubernetes.test.ts

# A/B upgrades of the image in one QEMU VM (needs root, ~25 min under TCG on 2 cores: too slow
# for make test): refusals, a power cut mid-write, v1 -> v2 commit, a failing gate and an
# unbootable slot rolled back by themselves.
test-upgrade: deps typecheck
	node test/run-suite.mjs --concurrency 1 test/image/upgrade.test.ts

# The rolling pair upgrade: two QEMU VMs paired, `geminik8s upgrade` over SSH under a writer
# through the VIP (needs root, ~35 min under TCG on 2 cores).
test-upgrade-pair: deps typecheck
	node test/run-suite.mjs --concurrency 1 test/image/pair-upgrade.test.ts

# The arm64 UEFI image built on this x86_64 host and booted in qemu-system-aarch64 (needs root; the
# cold build runs the arm64 root under qemu-user, about 30 min on 2 cores: too slow for make test).
# GEMINIK8S_FIGURES=file records its build and boot figures.
test-arm64: deps typecheck
	@sh builder/host-deps.sh qemu-system-arm qemu-efi-aarch64
	node test/run-suite.mjs --concurrency 1 test/image/boot-arm64.test.ts

# The Raspberry Pi 4 SD image built on this x86_64 host: its partitions and boot files checked
# against the Pi firmware's documentation, its root booted in qemu-system-aarch64 by direct kernel
# boot (QEMU cannot run the Pi 4 firmware: the test plays its bootloader, autoboot.txt and tryboot
# included), and an A/B upgrade through a tryboot trial to a commit. A cold build is about 10 min
# on 2 cores, the tests about 15 more.
test-rpi4: deps typecheck
	@sh builder/host-deps.sh qemu-system-arm
	node test/run-suite.mjs --concurrency 1 test/image/boot-rpi4.test.ts test/image/upgrade-rpi4.test.ts

# Needs root: the upgrade figures, from the two QEMU upgrade tests (BENCH_UPGRADE=single: one box only).
bench-upgrade: deps typecheck
	node --import tsx bench/upgrade.ts

# Needs root; RUNS=3 by default.
bench-failover: deps
	node --import tsx bench/failover.ts

# Needs root: our pair beside Patroni + etcd and pg_auto_failover, faults a and c (Debian packages).
bench-peers: deps
	@sh builder/host-deps.sh patroni etcd-server postgresql-15-auto-failover
	node --import tsx bench/peers.ts

# Needs root: idle memory (PSS) of one appliance by program, on a pair running Kubernetes.
bench-memory: deps
	node --import tsx bench/memory.ts

bench-operator: deps
	@sh builder/host-deps.sh openssh-server
	node --import tsx bench/operator.ts

clean:
	rm -rf dist .cache
