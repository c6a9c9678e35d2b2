#!/bin/sh
# make demo: a real container from the busybox rootfs, run by berth-oci, printing proof of its
# isolation. Everything it creates lives in a temp directory and a uniquely named cgroup.
set -eu
cd "$(dirname "$0")/.."
bin=target/release
work=$(mktemp -d /tmp/berth-demo.XXXXXX)
id="berth-demo-$$"
cleanup() {
    "$bin/berth-oci" --root "$work/state" delete --force "$id" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

echo "== building a busybox bundle from Debian's busybox-static"
# The demo's own cgroup, removed with the container.
"$bin/berth-testkit" bundle "$work/bundle" --hostname berth-demo --memory 67108864 --cgroups-path "/$id" -- sh -c '
    echo "hostname:        $(hostname)"
    echo "my pid:          $$"
    if [ -f /sys/fs/cgroup/memory.max ]; then limit=$(cat /sys/fs/cgroup/memory.max)
    else limit=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes); fi
    echo "memory limit:    $limit bytes (from my own cgroup)"
    echo "mounts I see:    $(wc -l < /proc/self/mountinfo)"
    echo "processes I see: $(ls -d /proc/[0-9]* | wc -l) (its own pid namespace)"
'

echo "== the host:     hostname $(hostname), $(wc -l < /proc/self/mountinfo) mounts, $(ls -d /proc/[0-9]* | wc -l) processes"
echo "== berth-oci run $id"
"$bin/berth-oci" --root "$work/state" run --bundle "$work/bundle" "$id"
echo "== container exited with status $?, state and cgroup removed"
