#!/bin/sh
# berthd against containerd's CRI plugin (Debian's containerd 1.6 with runc), in one run, driven
# by the same tonic client (`berth-bench cri`): each RPC of a pod's and its container's life,
# a pod and container from scratch, 20 pods started at once, then the memory (RSS and PSS) of
# each server with its helpers while 50 pods run; medians, ranges, ratios berthd/containerd.
#
# Both servers, a docker-registry on 127.0.0.1:5000 and the client run in namespaces made for
# the run (network, IPC, mount with its own /run and /var/lib tmpfs, PID with berth-init as
# PID 1, which reaps orphans and whose end ends whatever a failed run left). The images are
# critest's offline stand-ins (../shared/tools/critest/build-images.sh: busybox and a static
# pause), pushed to the registry and pulled through each server's PullImage (berthd's
# [[registries.mirrors]], containerd's registry.mirrors). Each server runs under
# `berth-bench subreaper`, so its double-forked helpers (monitors, shims) stay its
# descendants for the memory count. Then `berth-bench cri-streams`: `crictl exec` and
# `crictl exec -s` of `true`, and 100 MB through `crictl port-forward` (CRICTL, default
# ../shared/bin/crictl), each server in turn. Then `berth-bench kubelet`: the same kubelet
# (KUBELET, default ../shared/bin/kubelet) on each server: static pods started and deleted,
# kubelet's time inside CRI calls, and each server's CPU while kubelet watches KUBELET_PODS
# (default 50) running pods. Everything lives in a temp directory and the cgroup
# parent /berth-bench-cri-TAG, both removed at the end.
#   ITERATIONS (default 10); CRI_BENCH_ARGS: more `berth-bench cri` options (a quick run:
#   "--concurrent 4 --memory-pods 5"); CRITEST_IMAGES (default ../shared/tools/critest)
set -eu
cd "$(dirname "$0")/.."
project=$(pwd)
bin=$project/target/release

if [ "${1:-}" = --inside ]; then
    work=$2
    ip link set lo up
    # A private /run (containerd's runc state, netns, xtables lock; berthd's CNI lock) and
    # /var/lib (libcni's cache) for this namespace only: nothing either server writes outside
    # the temp directory reaches the host.
    mount -t tmpfs -o mode=0755 tmpfs /run
    mount -t tmpfs -o mode=0755 tmpfs /var/lib
    . "$project/tools/registry.sh"
    start_registry "$work/registry" 127.0.0.1:5000
    registry=$REGISTRY_PID
    skopeo copy --quiet --dest-tls-verify=false --format v2s2 "oci:$work/img/oci:busybox" \
        docker://127.0.0.1:5000/e2e-test-images/busybox:1.29-2
    skopeo copy --quiet --dest-tls-verify=false --format v2s2 "oci:$work/img/oci:pause" \
        docker://127.0.0.1:5000/pause:3.9

    # berthd: its own store, pods' default network (bridge, subnet) and mirrors.
    {
        printf '[engine]\ncgroup-parent = "%s/berthd-engine"\ninit = "%s"\n' "$CGROUP_PARENT" "$project/target/init/release/berth-init"
        printf '[engine.network]\ndefault-name = "bench"\ndefault-bridge = "berthb0"\ndefault-subnet = "10.89.0.0/16"\n'
        printf '[cri]\nrestrict-oom-score-adj = true\n'
        printf '[[registries.mirrors]]\nregistry = "registry.k8s.io"\nlocations = ["127.0.0.1:5000"]\n'
    } >"$work/berth.toml"
    "$bin/berth-bench" subreaper "$bin/berthd" --root "$work/berthd" --config "$work/berth.toml" \
        --listen "unix://$work/berthd.sock" >"$work/berthd.log" 2>&1 &
    berthd=$!

    # containerd: root, state and sockets in the temp dir, its CRI plugin with runc (shim v2),
    # the pause stand-in as sandbox image, CNI bridge + host-local + portmap on its own subnet.
    c=$work/containerd
    mkdir -p "$c/cni" "$c/tmp"
    cat >"$c/cni/10-bench.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "containerd-bench", "plugins": [
  {"type": "bridge", "bridge": "ctrdb0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}],
            "ranges": [[{"subnet": "10.88.0.0/16", "gateway": "10.88.0.1"}]], "dataDir": "$c/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}
]}
EOF
    cat >"$c/config.toml" <<EOF
version = 2
root = "$c/root"
state = "$c/state"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.internal.v1.tracing",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "$c/containerd.sock"
[ttrpc]
  address = "$c/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.9"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "$c/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$c/cni"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."registry.k8s.io"]
    endpoint = ["http://127.0.0.1:5000"]
EOF
    TMPDIR=$c/tmp "$bin/berth-bench" subreaper containerd --config "$c/config.toml" >"$work/containerd.log" 2>&1 &
    containerd=$!

    i=0
    until [ -S "$work/berthd.sock" ] && [ -S "$c/containerd.sock" ]; do
        i=$((i + 1))
        if [ $i -ge 300 ]; then
            echo "bench/cri.sh: the servers did not start; berthd's log:" >&2
            tail -n 20 "$work/berthd.log" >&2
            echo "containerd's log:" >&2
            tail -n 20 "$work/containerd.log" >&2
            kill -TERM "$berthd" "$containerd" 2>/dev/null || true
            exit 1
        fi
        sleep 0.1
    done
    status=0
    "$bin/berth-bench" cri --iterations "${ITERATIONS:-10}" ${CRI_BENCH_ARGS:-} \
        --image registry.k8s.io/e2e-test-images/busybox:1.29-2 --pull registry.k8s.io/pause:3.9 \
        --cgroup-parent "$CGROUP_PARENT" --log-dir "$work/logs" \
        --pid berthd=$berthd --pid containerd=$containerd \
        berthd="unix://$work/berthd.sock" containerd="unix://$c/containerd.sock" || status=$?
    # Exec and port-forward through each server's streaming server, as crictl drives them.
    "$bin/berth-bench" cri-streams --crictl "$CRICTL" --iterations "${ITERATIONS:-10}" \
        --image registry.k8s.io/e2e-test-images/busybox:1.29-2 \
        --cgroup-parent "$CGROUP_PARENT/streams" --work-dir "$work" \
        berthd="unix://$work/berthd.sock" containerd="unix://$c/containerd.sock" || status=$?
    # The same kubelet on each: it needs a node address that is not loopback (a veth here) and
    # writes to /var/log whatever its configuration says (a private one here).
    ip link add kbv0 type veth peer name kbv1
    ip addr add 10.252.0.1/24 dev kbv0
    ip link set kbv0 up
    ip link set kbv1 up
    mount -t tmpfs -o mode=0755 tmpfs /var/log
    "$bin/berth-bench" kubelet --kubelet "$KUBELET" --crictl "$CRICTL" --node-ip 10.252.0.1 \
        --image registry.k8s.io/e2e-test-images/busybox:1.29-2 --iterations "${ITERATIONS:-10}" \
        --pods "${KUBELET_PODS:-50}" --cgroup-root "$CGROUP_PARENT/kubelet" --work-dir "$work" \
        berthd="unix://$work/berthd.sock@$berthd" containerd="unix://$c/containerd.sock@$containerd" || status=$?
    kill -TERM "$berthd" "$containerd" "$registry" 2>/dev/null || true
    wait "$berthd" || true
    wait "$containerd" || true
    if [ $status -ne 0 ]; then
        echo "bench/cri.sh: failed; the end of berthd's log:" >&2
        tail -n 20 "$work/berthd.log" >&2
        echo "the end of containerd's log:" >&2
        grep -E 'level=(error|fatal)' "$work/containerd.log" | tail -n 20 >&2 || true
    fi
    exit $status
fi

for b in berthd berth berth-monitor berth-oci berth-bench; do
    [ -x "$bin/$b" ] || { echo "bench/cri.sh: $bin/$b is missing: make build" >&2; exit 1; }
done
[ -x target/init/release/berth-init ] || { echo "bench/cri.sh: berth-init is missing: make build" >&2; exit 1; }
for t in containerd containerd-shim-runc-v2 runc docker-registry skopeo curl; do
    command -v $t >/dev/null || { echo "bench/cri.sh: $t is missing (make deps)" >&2; exit 1; }
done
export CRICTL=${CRICTL:-$project/../shared/bin/crictl}
[ -x "$CRICTL" ] || { echo "bench/cri.sh: crictl ($CRICTL) is missing (set CRICTL)" >&2; exit 1; }
export KUBELET=${KUBELET:-$project/../shared/bin/kubelet}
[ -x "$KUBELET" ] || { echo "bench/cri.sh: kubelet ($KUBELET) is missing (set KUBELET)" >&2; exit 1; }
CRITEST_IMAGES=${CRITEST_IMAGES:-$project/../shared/tools/critest}
[ -x "$CRITEST_IMAGES/build-images.sh" ] || {
    echo "bench/cri.sh: $CRITEST_IMAGES/build-images.sh is missing (set CRITEST_IMAGES)" >&2
    exit 1
}
work=$(mktemp -d /tmp/berth-bench-cri.XXXXXX)
export CGROUP_PARENT="/berth-bench-cri-${work##*.}"
cleanup() {
    set +e
    # The namespaces are gone (and with them mounts and processes); pods were removed through
    # the CRI: what is left are the cgroup directories the pods' parents made.
    for dir in /sys/fs/cgroup/*"$CGROUP_PARENT" /sys/fs/cgroup"$CGROUP_PARENT"; do
        if [ -d "$dir" ]; then find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null; fi
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
echo "== berthd against containerd $(containerd --version | awk '{print $3}') (CRI plugin, runc $(runc --version | awk 'NR==1 {print $3}')), work dir $work"
"$CRITEST_IMAGES/build-images.sh" "$work/img" 2>"$work/build-images.log" || {
    echo "bench/cri.sh: building the images failed:" >&2
    cat "$work/build-images.log" >&2
    exit 1
}
unshare --net --ipc --mount --propagation private --pid --fork --mount-proc \
    "$project/target/init/release/berth-init" -- "$0" --inside "$work"
