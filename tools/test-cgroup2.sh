#!/bin/sh
# The berth-oci integration suite inside a pure cgroup v2 guest (this host is hybrid v1/v2):
# the v2 paths (unified resources, eBPF device filter, cgroup.freeze, cgroup2 mounts) run for
# real. Boots one guest (tools/run-in-cgroup2-vm.sh, qemu TCG) for the whole suite.
set -eu
cd "$(dirname "$0")/.."
repo=$(pwd)
cargo build --bin berth-oci --quiet
testbin=$(cargo test --test oci --no-run --message-format=json 2>/dev/null \
    | grep '"kind":\["test"\]' | grep '"name":"oci"' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n1)
[ -x "$testbin" ] || { echo "test-cgroup2: could not build the integration test binary" >&2; exit 1; }
echo "== berth-oci integration suite in a pure cgroup v2 guest"
# The guest has the host's binaries (and their libraries) at the same paths; /tmp is a tmpfs.
# The 1,000-cycle endurance test runs on the host's hybrid and pure v1 hierarchies only: under
# software emulation (it takes 44 s on the host, where the guest is many times slower).
VM_BINS="$testbin $repo/target/debug/berth-oci" VM_MEM=${VM_MEM:-1536} VM_TIMEOUT=${VM_TIMEOUT:-1200} \
    ./tools/run-in-cgroup2-vm.sh "$repo" env TMPDIR=/tmp "$testbin" --test-threads 2 --skip endurance:: "$@"
