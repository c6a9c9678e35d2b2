#!/bin/sh
# The berth-oci integration suite and its callers suite (podman with conmon, containerd with its
# runc shim) inside a pure cgroup v2 guest (this host is hybrid v1/v2): the v2 paths (unified
# resources, eBPF device filter, cgroup.freeze, cgroup2 mounts) run for real, also as podman and
# containerd drive them. Boots one guest (tools/run-in-cgroup2-vm.sh, qemu TCG) for both.
set -eu
cd "$(dirname "$0")/.."
repo=$(pwd)
cargo build --bin berth-oci --quiet
test_binary() {
    cargo test -p berth-oci --test "$1" --no-run --message-format=json 2>/dev/null \
        | grep '"kind":\["test"\]' | grep "\"name\":\"$1\"" | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n1
}
oci=$(test_binary oci)
callers=$(test_binary callers)
for t in "$oci" "$callers"; do
    [ -x "$t" ] || { echo "test-cgroup2: could not build the integration test binaries" >&2; exit 1; }
done
# The guest has the host's binaries (and their libraries) at the same paths, and a tmpfs root
# otherwise: podman's signature policy and default configuration (seccomp profile) go in
# through the shared directory, /var/lib and /var/tmp are made.
files=$repo/target/cgroup2-guest-files
rm -rf "$files"
mkdir -p "$files/etc/containers" "$files/usr/share"
cp /etc/containers/policy.json "$files/etc/containers/"
cp -a /usr/share/containers "$files/usr/share/"
# The oci suite's static probe (probe.c): the guest has no C compiler, so it is built here.
mkdir -p "$files/usr/local/libexec"
cc -static -Os -o "$files/usr/local/libexec/berth-oci-test-probe" crates/berth-oci/tests/oci/probe.c
bins="$oci $callers $repo/target/debug/berth-oci"
for tool in podman conmon containerd ctr containerd-shim-runc-v2; do
    path=$(command -v $tool) || { echo "test-cgroup2: $tool is not installed (make deps)" >&2; exit 1; }
    bins="$bins $path"
done
# In the guest, on one line (the command crosses to the guest shell-quoted): set up, then both
# suites whatever the first one's result, with this script's arguments (test filters) for both.
guest='mkdir -p /var/lib /var/tmp /run && cp -a "$1/." / || exit 1; oci=$2; callers=$3; shift 3;'
guest="$guest"' export TMPDIR=/tmp PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin;'
guest="$guest"' export BERTH_OCI_TEST_PROBE=/usr/local/libexec/berth-oci-test-probe;'
guest="$guest"' "$oci" --test-threads 2 --skip endurance:: "$@"; a=$?; echo "== callers (podman, containerd)";'
guest="$guest"' "$callers" --test-threads 2 "$@"; b=$?; [ $a -eq 0 ] && [ $b -eq 0 ]'
echo "== berth-oci integration and callers suites in a pure cgroup v2 guest"
# The 1,000-cycle endurance test runs on the host's hybrid and pure v1 hierarchies only: under
# software emulation the guest is many times slower than the host.
VM_BINS="$bins" VM_MEM=${VM_MEM:-1536} VM_TIMEOUT=${VM_TIMEOUT:-1200} \
    ./tools/run-in-cgroup2-vm.sh "$repo" sh -c "$guest" guest "$files" "$oci" "$callers" "$@"
