# berth: `make demo` runs a real container; `make test` is everything CI checks.
# Both install missing Debian packages first (tools/install-deps.sh, as root).

CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: all deps build demo test test-v2 lint bench clean

all: build

deps:
	./tools/install-deps.sh

# berth-oci is linked statically and optimised for size: it runs for every container
# operation, so its start-up time and resident size count (ratios in `make bench`); stripped,
# because create and exec copy it into a sealed memfd (CVE-2019-5736).
HOST_TRIPLE := $(shell rustc -vV | sed -n 's/^host: //p')

build: deps
	$(CARGO) build --release --workspace --bins --exclude berth-oci
	RUSTFLAGS="-C target-feature=+crt-static" CARGO_PROFILE_RELEASE_OPT_LEVEL=s CARGO_PROFILE_RELEASE_STRIP=true \
		LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=/usr/lib/$(shell gcc -print-multiarch) \
		$(CARGO) build --release -p berth-oci --target $(HOST_TRIPLE)
	install -m 0755 target/$(HOST_TRIPLE)/release/berth-oci target/release/berth-oci

demo: build
	./tools/demo.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Unit and integration tests (real containers, as root, in temp roots) on this host's cgroup
# layout, then the berth-oci suite again on pure cgroup v1 and inside a pure cgroup v2 guest, and
# the snapshot tests on Debian 12's 6.1 kernel (overlayfs before the new mount API's lowerdir+).
test: deps lint
	$(CARGO) test --workspace
	./tools/test-cgroup1.sh
	./tools/test-cgroup2.sh
	./tools/test-storage-kernel61.sh

test-v2: deps
	./tools/test-cgroup2.sh

bench: build
	./bench/run.sh

clean:
	$(CARGO) clean
