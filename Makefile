# berth: `make demo` runs a real container; `make test` is everything CI checks.
# Both install missing Debian packages first (tools/install-deps.sh, as root).

CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: all deps build init demo test test-v2 compare-oci lint bench clean

all: build

deps:
	./tools/install-deps.sh

# berth-oci and berth-monitor are linked statically and optimised for size: the runtime runs
# for every container operation and the monitor stays beside every container, so start-up
# time and resident size count (ratios in `make bench`); stripped, because where create and
# exec cannot mount a read-only view of berth-oci (rootless) they copy it into a sealed memfd
# (CVE-2019-5736).
HOST_TRIPLE := $(shell rustc -vV | sed -n 's/^host: //p')

build: deps
	$(CARGO) build --release --workspace --bins --exclude berth-oci --exclude berth-monitor
	RUSTFLAGS="-C target-feature=+crt-static" CARGO_PROFILE_RELEASE_OPT_LEVEL=s CARGO_PROFILE_RELEASE_STRIP=true \
		LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=/usr/lib/$(shell gcc -print-multiarch) \
		$(CARGO) build --release -p berth-oci -p berth-monitor --target $(HOST_TRIPLE)
	install -m 0755 target/$(HOST_TRIPLE)/release/berth-oci target/release/berth-oci
	install -m 0755 target/$(HOST_TRIPLE)/release/berth-monitor target/release/berth-monitor
	$(MAKE) init
	install -m 0755 target/init/release/berth-init target/release/berth-init

# berth-init (for `run --init`) has no std and no libc: its own workspace, panic = "abort".
init:
	$(CARGO) build --release --manifest-path crates/init/Cargo.toml --target-dir target/init

demo: build
	./tools/demo.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path crates/init/Cargo.toml -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --manifest-path crates/init/Cargo.toml --target-dir target/init -- -D warnings

# Unit and integration tests (real containers, as root, in temp roots) on this host's cgroup
# layout, berth-oci's conformance tests against runc and crun (where they differ by design, the
# test says which is right per the runtime-spec and skips them), then the berth-oci suite again
# on pure cgroup v1 and, with its podman and containerd
# callers suite, inside a pure cgroup v2 guest, and
# the snapshot tests on Debian 12's 6.1 kernel (overlayfs before the new mount API's lowerdir+).
# critest (the CRI's validation suite, ../shared/bin) runs against berthd after the workspace's
# tests (tools/test-critest.sh).
# The engine's end-to-end tests run the workspace's binaries (berth, berth-monitor, berth-oci)
# and berth-init: all are built first.
test: deps lint init
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace
	./tools/test-critest.sh
	./tools/test-oci-peers.sh conformance::
	./tools/test-cgroup1.sh
	./tools/test-cgroup2.sh
	./tools/test-storage-kernel61.sh

test-v2: deps
	./tools/test-cgroup2.sh

# berth-oci's whole integration suite against runc and crun, as a comparison: the assertions on
# berth-oci's own error texts fail for them by design (`make test` runs the conformance tests).
compare-oci: deps
	-./tools/test-oci-peers.sh

bench: build
	./bench/run.sh

clean:
	$(CARGO) clean
