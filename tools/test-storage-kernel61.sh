#!/bin/sh
# berth-storage's snapshot tests on Debian's 6.1 kernel, in one boot of the qemu guest of
# tools/run-in-cgroup2-vm.sh: before 6.5 overlayfs takes only a mount(2) option string (the
# kernel's legacy parameter parser accepts any key, so the new mount API's "lowerdir+" fails
# only at creation), and before 6.8 there is no "lowerdir+" at all. The host's newer kernel
# never takes those paths.
set -eu
cd "$(dirname "$0")/.."
repo=$(pwd)
testbin=$(cargo test -p berth-storage --test snapshot --no-run --message-format=json 2>/dev/null \
    | grep '"kind":\["test"\]' | grep '"name":"snapshot"' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n1)
[ -x "$testbin" ] || { echo "test-storage-kernel61: could not build the snapshot test binary" >&2; exit 1; }
kernel=$(ls -1 /boot/vmlinuz-6.1.* 2>/dev/null | sort -V | tail -n1)
[ -n "$kernel" ] || { echo "test-storage-kernel61: no 6.1 kernel in /boot (Debian 12's linux-image-amd64)" >&2; exit 1; }
echo "== berth-storage snapshot tests on $(basename "$kernel")"
# The guest's /tmp is a tmpfs: layers, upper and work directories live there.
VM_KERNEL=$kernel VM_BINS="$testbin" ./tools/run-in-cgroup2-vm.sh "$repo" \
    env TMPDIR=/tmp "$testbin" --test-threads 1 "$@"
