#!/bin/sh
# berth build against Debian's buildah (`bud --layers`, overlay storage in a private root,
# chroot isolation with runc as the runtime, since Debian's crun refuses a hybrid cgroup host),
# one Containerfile of about ten steps (RUNs writing files, a COPY of a context with a few
# thousand files, a multi-stage copy), the same busybox base in both: cold (--no-cache, the
# base already stored) and fully cached, medians of $RUNS runs and ratios berth/buildah. RUN
# steps get no network in both (--network none; buildah's chroot isolation has only the
# host's). Everything lives in a temp directory and is removed at the end.
set -eu
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
FILES=${FILES:-3000}
bin=$(pwd)/target/release
for b in berth berth-monitor berth-oci berth-testkit; do
    [ -x "$bin/$b" ] || { echo "bench/build.sh: $bin/$b is missing: make build" >&2; exit 1; }
done
for t in buildah runc; do command -v $t >/dev/null || { echo "bench/build.sh: $t is missing (make deps)" >&2; exit 1; }; done
# (Lower case: buildah derives a container name from the base's path.)
work=/tmp/berth-bench-build.$$
mkdir -m 0700 "$work"
tag=$$
printf '[engine]\ncgroup-parent = "/berth-bench-build-%s"\n' "$tag" > "$work/berth.toml"
berth() { "$bin/berth" --root "$work/berth-root" --config "$work/berth.toml" "$@"; }
buildah() {
    TMPDIR="$work/tmp" command buildah --root "$work/buildah-root" --runroot "$work/buildah-run" \
        --storage-driver overlay "$@"
}
mkdir -p "$work/tmp"
cleanup() {
    set +e
    # Only ever below this run's own directory.
    case "$work" in /tmp/berth-bench-build.*) ;; *) return ;; esac
    for id in $(berth ps -aq 2>/dev/null); do berth rm -f "$id" >/dev/null 2>&1; done
    buildah rm -a >/dev/null 2>&1
    buildah rmi -a -f >/dev/null 2>&1
    awk -v w="$work/" 'index($5, w) == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null
    done
    for h in /sys/fs/cgroup/*; do rmdir "$h/berth-bench-build-$tag" 2>/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

echo "== the base: busybox-static, one layer, in berth's store and as an OCI layout for buildah"
"$bin/berth-testkit" image-layout "$work/layout" localhost/bench/base:1 --layers 0 >/dev/null
berth load -q -i "$work/layout" >/dev/null
ctx=$work/context
mkdir -p "$ctx/src"
i=0
while [ $i -lt "$FILES" ]; do
    d=$((i % 30))
    mkdir -p "$ctx/src/d$d"
    echo "source file $i" > "$ctx/src/d$d/f$i.txt"
    i=$((i + 1))
done
printf '%s\n' \
    'ARG BASE' \
    'FROM $BASE AS builder' \
    'RUN mkdir -p /out && i=0 && while [ $i -lt 200 ]; do echo "generated $i" > /out/g$i; i=$((i+1)); done' \
    'RUN tar -cf /out.tar /out' \
    'FROM $BASE' \
    'ENV APP=/app' \
    'WORKDIR /app' \
    'COPY src/ ./src/' \
    'RUN find /app/src -type f | wc -l > /app/count' \
    'COPY --from=builder /out.tar /app/' \
    'RUN mkdir -p /var/data && dd if=/dev/zero of=/var/data/blob bs=1M count=8 2>/dev/null' \
    'LABEL bench=yes' \
    'CMD ["cat", "/app/count"]' > "$ctx/Containerfile"

now() { date +%s%N; }
# elapsed CMD...: the command's wall time in microseconds (it must succeed)
elapsed() {
    t0=$(now)
    "$@" >/dev/null 2>&1 || { echo "bench/build.sh: failed: $*" >&2; "$@" >&2 || true; exit 1; }
    t1=$(now)
    echo $(( (t1 - t0) / 1000 ))
}
median() { for x in $1; do echo "$x"; done | sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.2f", m/1000000}'; }

berth_cold() { berth build -q --no-cache --network none --build-arg BASE=localhost/bench/base:1 -t localhost/bench/app:1 "$ctx"; }
berth_cached() { berth build -q --network none --build-arg BASE=localhost/bench/base:1 -t localhost/bench/app:1 "$ctx"; }
BASE_OCI="oci:$work/layout:localhost/bench/base:1"
buildah_bud() { buildah bud -q --layers --runtime runc --isolation chroot --build-arg "BASE=$BASE_OCI" -t localhost/bench/app:1 "$@" "$ctx"; }
buildah_cold() { buildah_bud --no-cache; }
buildah_cached() { buildah_bud; }

echo "== warm-up (and a check that both images are right)"
berth_cold >/dev/null
[ "$(berth run --rm --network none localhost/bench/app:1 | tr -d ' ')" = "$FILES" ] || { echo "bench/build.sh: berth's image is wrong" >&2; exit 1; }
buildah_cold >/dev/null
echo "== $RUNS builds of each kind, taking turns"
bc=""; bk=""; hc=""; hk=""
i=0
while [ $i -lt "$RUNS" ]; do
    bc="$bc $(elapsed berth_cold)"
    hc="$hc $(elapsed buildah_cold)"
    bk="$bk $(elapsed berth_cached)"
    hk="$hk $(elapsed buildah_cached)"
    i=$((i + 1))
done
row() {
    b=$(median "$2"); h=$(median "$3")
    printf '| %s | %s | %s | %s |\n' "$1" "$b" "$h" "$(echo "$b $h" | awk '{printf "%.2f", $1 / $2}')"
}
echo
echo "| build ($FILES files in the context), s | berth | buildah | berth/buildah |"
echo "| --- | --- | --- | --- |"
row "cold (--no-cache)" "$bc" "$hc"
row "fully cached" "$bk" "$hk"
