#!/bin/sh
# The berth-oci integration suite on pure cgroup v1: this host's hybrid layout minus its cgroup2
# mount, in a private mount namespace (the host's own mounts stay untouched).
set -eu
cd "$(dirname "$0")/.."
cargo build --bin berth-oci --quiet
testbin=$(cargo test --test oci --no-run --message-format=json 2>/dev/null \
    | grep '"kind":\["test"\]' | grep '"name":"oci"' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n1)
[ -x "$testbin" ] || { echo "test-cgroup1: could not build the integration test binary" >&2; exit 1; }
# Pure v1 is made by hiding the cgroup2 mount of a hybrid host: a host with no v1 hierarchies
# (pure cgroup v2) cannot give it.
if ! grep -q ' - cgroup cgroup ' /proc/self/mountinfo; then
    echo "test-cgroup1: this host has no cgroup v1 hierarchies (pure cgroup v2?): the pure v1 run needs a v1 or hybrid host" >&2
    exit 1
fi
echo "== berth-oci integration suite on pure cgroup v1"
exec unshare --mount --propagation private sh -c '
    if mountpoint -q /sys/fs/cgroup/unified; then umount /sys/fs/cgroup/unified; fi
    exec "$@"' sh "$testbin" "$@"
