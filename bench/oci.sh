#!/bin/sh
# berth-oci against runc and crun (Debian packages), in one run, alike for all three: inside a
# private mount namespace without the cgroup2 mount, because Debian's crun 1.8 refuses hybrid
# cgroup hosts (the host's own mounts stay untouched).
set -eu
cd "$(dirname "$0")/.."
for t in runc crun; do command -v $t >/dev/null || { echo "bench/oci.sh: $t is missing (make deps)" >&2; exit 1; }; done
oci=$(pwd)/target/release/berth-oci
bench=$(pwd)/target/release/berth-bench
[ -x "$oci" ] && [ -x "$bench" ] || { echo "bench/oci.sh: build first (make build)" >&2; exit 1; }
exec unshare --mount --propagation private sh -c '
    if mountpoint -q /sys/fs/cgroup/unified; then umount /sys/fs/cgroup/unified; fi
    exec "$0" oci --iterations "${ITERATIONS:-30}" --runs "${RUNS:-100}" berth-oci="$1" crun="$(command -v crun)" runc="$(command -v runc)"
' "$bench" "$oci"
