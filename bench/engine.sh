#!/bin/sh
# berth's engine against podman (Debian's, with conmon), in one run, on the same busybox image
# imported into both (no internet): `run --rm IMAGE true` and `run -d` + `rm -f`, with
# berth-oci, runc and crun as the runtime of each (Debian's crun 1.8 refuses a hybrid cgroup
# host: on one, podman+crun runs in a private mount namespace without the cgroup2 mount, as
# berth's crun handler runs crun), with no network and on a bridge network of each tool's own;
# medians and ratios; then the peak resident size of berth-monitor against conmon's, each
# watching a running container. Everything lives in a temp directory, its own bridges and
# subnets, and is removed at the end.
set -eu
cd "$(dirname "$0")/.."
bin=$(pwd)/target/release
for b in berth berth-monitor berth-oci berth-testkit; do
    [ -x "$bin/$b" ] || { echo "bench/engine.sh: $bin/$b is missing: make build" >&2; exit 1; }
done
for t in podman conmon runc crun; do command -v $t >/dev/null || { echo "bench/engine.sh: $t is missing (make deps)" >&2; exit 1; }; done
N=${ITERATIONS:-20}
work=$(mktemp -d /tmp/berth-bench-engine.XXXXXX)
tag=$$
bbridge="bbb$((tag % 100000))"
pbridge="bbp$((tag % 100000))"
# Two /24s no host route uses.
pick_subnet() {
    i=$1
    while [ "$i" -lt 250 ]; do
        if ! ip -4 route | grep -q "^10\.232\.$i\."; then echo "10.232.$i"; return; fi
        i=$((i + 1))
    done
    echo "bench/engine.sh: no free subnet in 10.232.0.0/16" >&2; exit 1
}
bnet=$(pick_subnet 10)
pnet=$(pick_subnet $(( ${bnet##*.} + 1 )))
root=$work/berth-root
cat > "$work/berth.toml" <<EOF
[engine]
cgroup-parent = "/berth-bench-$tag"
[engine.network]
default-name = "bench"
default-bridge = "$bbridge"
default-subnet = "$bnet.0/24"
EOF
berth() { "$bin/berth" --root "$root" --config "$work/berth.toml" "$@"; }
mkdir -p "$work/cni"
cat > "$work/cni/bench.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "podbench", "plugins": [
  {"type": "bridge", "bridge": "$pbridge", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}], "ranges": [[{"subnet": "$pnet.0/24", "gateway": "$pnet.1"}]],
            "dataDir": "$work/cni/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "firewall"}
]}
EOF
PODMAN_RUNTIME=runc
hybrid=false
if [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ] && [ "$(stat -fc %T /sys/fs/cgroup/unified 2>/dev/null)" = cgroup2fs ]; then
    hybrid=true
fi
podman() {
    set -- --root "$work/podman/root" --runroot "$work/podman/run" --tmpdir "$work/podman/tmp" \
        --cgroup-manager cgroupfs --events-backend none --runtime "$PODMAN_RUNTIME" \
        --network-config-dir "$work/cni" "$@"
    if [ "$PODMAN_RUNTIME" = crun ] && $hybrid; then
        unshare --mount --propagation private sh -c 'umount /sys/fs/cgroup/unified && exec podman "$@"' podman "$@"
    else
        command podman "$@"
    fi
}
# podman's cgroup parent (cgroupfs): removed at the end unless it was there before.
libpod_parent_before=$(ls -d /sys/fs/cgroup/*/libpod_parent 2>/dev/null || true)
PODMAN_RUN="--ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --log-driver k8s-file"
cleanup() {
    set +e
    for id in $(berth ps -aq 2>/dev/null); do berth rm -f "$id" >/dev/null 2>&1; done
    podman rm -af >/dev/null 2>&1
    podman rmi -af >/dev/null 2>&1
    berth network rm bench >/dev/null 2>&1
    ip link delete "$bbridge" 2>/dev/null
    ip link delete "$pbridge" 2>/dev/null
    for h in /sys/fs/cgroup/*; do rmdir "$h/berth-bench-$tag" 2>/dev/null; done
    umount -R "$work/podman" 2>/dev/null
    rm -rf "$work"
    if [ -z "$libpod_parent_before" ]; then
        for d in /sys/fs/cgroup/*/libpod_parent; do
            [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
        done
    fi
    host_net_restore
}
. tools/host-net-state.sh
host_net_save
trap cleanup EXIT INT TERM

echo "== the image: busybox-static's rootfs, imported into berth and podman"
"$bin/berth-testkit" rootfs "$work/rootfs" >/dev/null
tar -C "$work/rootfs" -cf "$work/busybox.tar" .
berth import "$work/busybox.tar" localhost/bench/busybox:1 >/dev/null
podman import -q "$work/busybox.tar" localhost/bench/busybox:1 >/dev/null
IMG=localhost/bench/busybox:1

now() { date +%s%N; }
# time_n N CMD...: one line of N durations (ms)
time_n() {
    n=$1; shift
    out=""
    i=0
    while [ $i -lt "$n" ]; do
        t0=$(now); "$@" >/dev/null 2>&1 || { echo "bench/engine.sh: failed: $*" >&2; "$@" >&2 || true; exit 1; }; t1=$(now)
        out="$out $(( (t1 - t0) / 1000 ))"
        i=$((i + 1))
    done
    echo "$out"
}
median() { for x in $1; do echo "$x"; done | sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f", m/1000}'; }

rundrm() { # run -d then rm -f, as one operation
    id=$("$@" run -d $EXTRA "$IMG" sleep 600) && "$@" rm -f "$id" >/dev/null
}
berth_rm() { berth run --rm $EXTRA "$IMG" true; }
podman_rm() { podman run --rm $PODMAN_RUN $EXTRA "$IMG" true; }
berth_d() { id=$(berth run -d $EXTRA "$IMG" sleep 600) && berth rm -f "$id"; }
podman_d() { id=$(podman run -d $PODMAN_RUN $EXTRA "$IMG" sleep 600) && podman rm -f -t 0 "$id"; }

# podman takes a runtime by name from its configuration, or by path (berth-oci).
runtime_path() { if [ "$1" = berth-oci ]; then echo "$bin/berth-oci"; else echo "$1"; fi; }
results=$work/results
: > "$results"
for net in none bridge; do
    # warm-up (network creation, caches)
    if [ $net = none ]; then NETB="--network none"; NETP="--network none"; else NETB=""; NETP="--network podbench"; fi
    for rt in berth-oci runc crun; do
        EXTRA="$NETB --runtime $rt"; berth_rm 2>/dev/null || { echo "berth run --runtime $rt failed:" >&2; berth_rm; exit 1; }
        PODMAN_RUNTIME=$(runtime_path $rt); EXTRA="$NETP"
        podman_rm 2>/dev/null || { echo "podman run --runtime $rt failed:" >&2; podman_rm; exit 1; }
    done
    for rt in berth-oci runc crun; do
        EXTRA="$NETB --runtime $rt"
        echo "berth/$rt $net run-rm $(median "$(time_n "$N" berth_rm)")" >> "$results"
        echo "berth/$rt $net run-d+rm $(median "$(time_n "$N" berth_d)")" >> "$results"
        PODMAN_RUNTIME=$(runtime_path $rt); EXTRA="$NETP"
        echo "podman/$rt $net run-rm $(median "$(time_n "$N" podman_rm)")" >> "$results"
        echo "podman/$rt $net run-d+rm $(median "$(time_n "$N" podman_d)")" >> "$results"
    done
done
PODMAN_RUNTIME=runc

echo
echo "== medians of $N runs (ms); ratio = podman / berth with the same runtime (higher: berth faster)"
printf "%-22s %-8s %12s %12s   %s\n" "engine/runtime" "network" "run --rm" "run -d+rm -f" "podman/berth (--rm / -d+rm)"
for net in none bridge; do
    for rt in berth-oci runc crun; do
        for who in berth/$rt podman/$rt; do
            rm_=$(awk -v w=$who -v n=$net '$1==w && $2==n && $3=="run-rm" {print $4}' "$results")
            d_=$(awk -v w=$who -v n=$net '$1==w && $2==n && $3=="run-d+rm" {print $4}' "$results")
            ratio=""
            if [ "${who%%/*}" = berth ]; then
                p_rm=$(awk -v w=podman/$rt -v n=$net '$1==w && $2==n && $3=="run-rm" {print $4}' "$results")
                p_d=$(awk -v w=podman/$rt -v n=$net '$1==w && $2==n && $3=="run-d+rm" {print $4}' "$results")
                ratio=$(awk -v a="$p_rm" -v b="$rm_" -v c="$p_d" -v d="$d_" 'BEGIN {printf "%.2fx / %.2fx", a/b, c/d}')
            fi
            printf "%-22s %-8s %12s %12s   %s\n" "$who" "$net" "$rm_" "$d_" "$ratio"
        done
    done
    p_rm=$(awk -v n=$net '$1=="podman/runc" && $2==n && $3=="run-rm" {print $4}' "$results")
    p_d=$(awk -v n=$net '$1=="podman/runc" && $2==n && $3=="run-d+rm" {print $4}' "$results")
    b_rm=$(awk -v n=$net '$1=="berth/berth-oci" && $2==n && $3=="run-rm" {print $4}' "$results")
    b_d=$(awk -v n=$net '$1=="berth/berth-oci" && $2==n && $3=="run-d+rm" {print $4}' "$results")
    echo "  $net: berth+berth-oci against podman+runc (each one's default): $(awk -v a="$p_rm" -v b="$b_rm" -v c="$p_d" -v d="$b_d" 'BEGIN {printf "%.2fx / %.2fx", a/b, c/d}')"
done

echo
echo "== the monitor's resident size, watching a running container (KiB)"
hwm() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
bid=$(berth run -d --network none "$IMG" sh -c 'while true; do echo tick; sleep 0.05; done')
sleep 1
mpid=$(berth inspect "$bid" | awk -F': ' '/"MonitorPid"/ {gsub(/[^0-9]/,"",$2); print $2}')
pid=$(podman run -d $PODMAN_RUN --network none "$IMG" sh -c 'while true; do echo tick; sleep 0.05; done')
sleep 1
cpid=$(podman inspect --format '{{.State.ConmonPid}}' "$pid")
printf "%-16s %10s %10s\n" "" "peak RSS" "RSS"
printf "%-16s %10s %10s\n" "berth-monitor" "$(hwm "$mpid")" "$(rss "$mpid")"
printf "%-16s %10s %10s\n" "conmon" "$(hwm "$cpid")" "$(rss "$cpid")"
echo "(both relaying a container that writes 20 log lines a second; ratio berth-monitor/conmon: $(awk -v a="$(hwm "$mpid")" -v b="$(hwm "$cpid")" 'BEGIN {printf "%.2f", a/b}'))"
