#!/bin/sh
# critest (cri-tools' CRI validation suite) against berthd, serially, as `make test` runs it.
#
# critest pulls images by their public names (registry.k8s.io, docker.io, …): stand-ins made
# offline by ../shared/tools/critest are pushed to a docker-registry on loopback, and berthd
# reaches it through registry mirrors for those hosts. berthd, the registry and critest run in
# namespaces made for the run: network (CNI's bridge and rules, the hostPort specs' 127.0.0.1),
# IPC (the host-IPC specs' shared memory), mount (berthd's mounts and pinned namespaces) and PID
# with berth-init as its PID 1 (it reaps the monitors and pods' processes, and ending it ends
# whatever a failed run left). Every spec that runs must pass; the ones skipped here are
# listed below with their reasons, and critest skips on its own those for features the host
# or berthd does not have (AppArmor where the host has it off, user namespaces, benchmarks).
#
#   tools/test-critest.sh [CRITEST ARGS…]     (e.g. --ginkgo.focus=REGEX)
# CRITEST: the critest binary (default ../shared/bin/critest); CRITEST_IMAGES: the folder that
# builds its images (default ../shared/tools/critest). Absent under CI=true: a failure.
# CRITEST_HANDLERS: the runtime handlers critest runs with, one run each (default: berth-oci,
# the default handler, then runc and crun).
set -eu
cd "$(dirname "$0")/.."
project=$(pwd)

if [ "${1:-}" = --inside ]; then
    shift
    work=$1
    shift
    ip link set lo up
    # Mounts shared within this namespace only (it was made private): the bidirectional
    # propagation specs need their host paths on shared mounts, as on a systemd host.
    mount --make-rshared /
    # The registry: a private network namespace has every port free.
    . "$project/tools/registry.sh"
    start_registry "$work/registry" 127.0.0.1:5000
    registry=$REGISTRY_PID
    "$CRITEST_IMAGES/push.sh" "$work/img" 127.0.0.1:5000
    {
        printf '[engine]\ncgroup-parent = "%s"\ninit = "%s"\n' "$CGROUP_PARENT" "$project/target/init/release/berth-init"
        printf '[cri]\nrestrict-oom-score-adj = true\n'
        for host in registry.k8s.io k8s.gcr.io gcr.io docker.io public.ecr.aws; do
            printf '[[registries.mirrors]]\nregistry = "%s"\nlocations = ["127.0.0.1:5000"]\n' "$host"
        done
    } >"$work/berth.toml"
    "$project/target/debug/berthd" --root "$work/root" --config "$work/berth.toml" \
        --listen "unix://$work/berthd.sock" >"$work/berthd.log" 2>&1 &
    berthd=$!
    i=0
    until [ -S "$work/berthd.sock" ]; do
        i=$((i + 1))
        [ $i -lt 300 ] || { echo "test-critest: berthd did not start:" >&2; cat "$work/berthd.log" >&2; exit 1; }
        sleep 0.1
    done
    status=0
    # Each runtime handler in turn (Kubernetes' RuntimeClass): berth-oci is the default one,
    # which kubelet asks for with no name.
    for handler in $CRITEST_HANDLERS; do
        case $handler in
            berth-oci) flag= ;;
            *) flag=--runtime-handler=$handler ;;
        esac
        "$CRITEST" --runtime-endpoint "unix://$work/berthd.sock" --image-endpoint "unix://$work/berthd.sock" \
            --ginkgo.no-color --ginkgo.junit-report "$work/critest-$handler.xml" --ginkgo.skip="$SKIP" \
            ${flag:+"$flag"} "$@" >"$work/critest-$handler.log" 2>&1 || status=$?
    done
    kill -TERM "$berthd" "$registry"
    wait "$berthd" || true
    exit $status
fi

# Specs not run, and why:
# - the image pinned by digest: its digest is the real image's, which cannot be made offline.
SKIP='public image with digest should be pulled and removed'
export SKIP

CRITEST=${CRITEST:-$project/../shared/bin/critest}
CRITEST_IMAGES=${CRITEST_IMAGES:-$project/../shared/tools/critest}
if [ ! -x "$CRITEST" ] || [ ! -x "$CRITEST_IMAGES/build-images.sh" ]; then
    if [ "${CI:-}" = true ]; then
        echo "test-critest: FAILED: critest ($CRITEST) or its images' tools ($CRITEST_IMAGES) are missing; set CRITEST / CRITEST_IMAGES" >&2
        exit 1
    fi
    echo "test-critest: SKIPPED: critest ($CRITEST) or its images' tools ($CRITEST_IMAGES) are missing; set CRITEST / CRITEST_IMAGES" >&2
    exit 0
fi
for bin in target/debug/berthd target/debug/berth target/debug/berth-monitor target/debug/berth-oci target/init/release/berth-init; do
    [ -x "$bin" ] || { echo "test-critest: $bin is not built (make test builds it)" >&2; exit 1; }
done
CRITEST_HANDLERS=${CRITEST_HANDLERS:-berth-oci runc crun}
export CRITEST CRITEST_IMAGES CRITEST_HANDLERS
work=$(mktemp -d /tmp/berth-critest.XXXXXX)
# Traversable, as /var/lib is: the root of a pod with a user namespace of its own reaches its
# root filesystem in the store by path, as an unprivileged host user.
chmod 711 "$work"
export CGROUP_PARENT="/berth-critest-${work##*.}"
echo "== critest against berthd (work dir $work)"
"$CRITEST_IMAGES/build-images.sh" "$work/img" 2>"$work/build-images.log" || {
    cat "$work/build-images.log" >&2
    exit 1
}
status=0
unshare --net --ipc --mount --propagation private --pid --fork --mount-proc \
    "$project/target/init/release/berth-init" -- "$0" --inside "$work" "$@" || status=$?
# The pods critest made and removed must have taken their cgroups along; anything else the
# run made went with its namespaces.
left=$(find /sys/fs/cgroup/*"$CGROUP_PARENT" /sys/fs/cgroup"$CGROUP_PARENT" -mindepth 1 -type d 2>/dev/null || true)
for dir in /sys/fs/cgroup/*"$CGROUP_PARENT" /sys/fs/cgroup"$CGROUP_PARENT"; do
    if [ -d "$dir" ]; then find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
done
for handler in $CRITEST_HANDLERS; do
    echo "-- runtime handler $handler:"
    grep -E '^(Ran |FAIL!|SUCCESS!|  \[FAIL\])' "$work/critest-$handler.log" || echo "   (no critest output)"
done
if [ "$status" -ne 0 ]; then
    echo "test-critest: FAILED (critest exited with $status); the end of berthd's log:" >&2
    tail -n 20 "$work/berthd.log" >&2
    echo "critest's logs: $work/critest-*.log" >&2
    exit 1
fi
if [ -n "$left" ]; then
    echo "test-critest: FAILED: removed pods left cgroups behind:" >&2
    echo "$left" >&2
    exit 1
fi
echo "test-critest: passed"
rm -rf "$work"
