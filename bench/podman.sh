#!/bin/sh
# A container's lifecycle through podman (with conmon) with berth-oci, runc and crun as its
# --runtime, side by side. Inside a private mount namespace without the cgroup2 mount, because
# Debian's crun 1.8 refuses hybrid cgroup hosts; alike for all three (the host's own mounts stay
# untouched). berth-bench keeps podman's store, configuration and state in a temporary directory.
set -eu
cd "$(dirname "$0")/.."
for t in podman conmon runc crun; do command -v $t >/dev/null || { echo "bench/podman.sh: $t is missing (make deps)" >&2; exit 1; }; done
oci=$(pwd)/target/release/berth-oci
bench=$(pwd)/target/release/berth-bench
[ -x "$oci" ] && [ -x "$bench" ] || { echo "bench/podman.sh: build first (make build)" >&2; exit 1; }
exec unshare --mount --propagation private sh -c '
    if mountpoint -q /sys/fs/cgroup/unified; then umount /sys/fs/cgroup/unified; fi
    exec "$0" podman --iterations "${ITERATIONS:-20}" berth-oci="$1" runc="$(command -v runc)" crun="$(command -v crun)"
' "$bench" "$oci"
