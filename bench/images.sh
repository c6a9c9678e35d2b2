#!/bin/sh
# Pull + unpack of a generated multi-layer image (about 200 MB uncompressed, gzip) from a local
# docker-registry: berth vs skopeo copy + umoci unpack vs containerd's ctr image pull (on a
# private socket), each from an empty store, median of $RUNS runs; then unpack throughput
# against tar -xzf of the same layers. Cleans up everything it started or wrote.
set -eu
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
LAYERS=${LAYERS:-6}
LAYER_SIZE=${LAYER_SIZE:-33554432}
BERTH=${BERTH:-target/release/berth}
TESTKIT=${TESTKIT:-target/release/berth-testkit}
for tool in "$BERTH" "$TESTKIT"; do
    [ -x "$tool" ] || { echo "images.sh: $tool missing (make build)" >&2; exit 1; }
done
for tool in docker-registry curl skopeo umoci containerd ctr tar; do
    command -v $tool >/dev/null || { echo "images.sh: $tool missing (make deps)" >&2; exit 1; }
done

T=$(mktemp -d /tmp/berth-bench-images.XXXXXX)
REG_PID=""
CTRD_PID=""
cleanup() {
    # containerd runs in the measuring subshell: its pid is in a file
    if [ -s "$T/ctrd.pid" ]; then kill "$(cat "$T/ctrd.pid")" 2>/dev/null || true; sleep 0.5; fi
    [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null || true
    # containerd may leave snapshot mounts below its root
    grep -o " $T[^ ]*" /proc/self/mountinfo 2>/dev/null | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$T"
}
trap cleanup EXIT INT TERM

now() { date +%s.%N; }
elapsed() { echo "$1 $2" | awk '{printf "%.3f", $2 - $1}'; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "generating the image ($LAYERS layers of $LAYER_SIZE bytes + busybox, gzip)..."
"$TESTKIT" image-layout "$T/layout" bench --layers "$LAYERS" --layer-size "$LAYER_SIZE" >/dev/null

PORT=$("$TESTKIT" free-port)
. tools/registry.sh
start_registry "$T/registry" "127.0.0.1:$PORT"
REG_PID=$REGISTRY_PID
IMG="127.0.0.1:$PORT/bench/img:v1"
skopeo copy --quiet --dest-tls-verify=false "oci:$T/layout:bench" "docker://$IMG"

# Sizes of the layers, from the layout's manifest.
MANIFEST=$(sed -e 's/.*"digest":"sha256:\([0-9a-f]*\)".*/\1/' "$T/layout/index.json")
LAYER_BLOBS=$(tr ',' '\n' < "$T/layout/blobs/sha256/$MANIFEST" | sed -n 's/.*"digest":"sha256:\([0-9a-f]*\)".*/\1/p' | tail -n +2)
COMP=0
UNCOMP=0
for b in $LAYER_BLOBS; do
    COMP=$((COMP + $(stat -c %s "$T/layout/blobs/sha256/$b")))
    UNCOMP=$((UNCOMP + $(gzip -dc "$T/layout/blobs/sha256/$b" | wc -c)))
done
NLAYERS=$(echo $LAYER_BLOBS | wc -w)

run_berth() {
    rm -rf "$T/berth-root"
    s=$(now)
    "$BERTH" --root "$T/berth-root" pull -q "$IMG" >/dev/null
    elapsed "$s" "$(now)"
}

run_skopeo_umoci() {
    rm -rf "$T/oci" "$T/bundle"
    s=$(now)
    skopeo copy --quiet --src-tls-verify=false "docker://$IMG" "oci:$T/oci:bench"
    umoci unpack --image "$T/oci:bench" "$T/bundle" >/dev/null
    elapsed "$s" "$(now)"
}

start_containerd() {
    rm -rf "$T/ctrd"
    mkdir -p "$T/ctrd"
    cat > "$T/ctrd/config.toml" <<TOML
version = 2
root = "$T/ctrd/root"
state = "$T/ctrd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$T/ctrd/sock"
[ttrpc]
  address = "$T/ctrd/sock.ttrpc"
TOML
    containerd --config "$T/ctrd/config.toml" >"$T/ctrd.log" 2>&1 &
    CTRD_PID=$!
    echo "$CTRD_PID" > "$T/ctrd.pid"
    w=0
    until ctr --address "$T/ctrd/sock" version >/dev/null 2>&1; do
        w=$((w + 1)); [ $w -gt 100 ] && { echo "containerd did not start" >&2; cat "$T/ctrd.log" >&2; exit 1; }
        sleep 0.1
    done
}

stop_containerd() {
    kill "$CTRD_PID"; wait "$CTRD_PID" 2>/dev/null || true; CTRD_PID=""; rm -f "$T/ctrd.pid"
    grep -o " $T/ctrd[^ ]*" /proc/self/mountinfo 2>/dev/null | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$T/ctrd"
}

run_ctr() {
    start_containerd
    s=$(now)
    ctr --address "$T/ctrd/sock" -n bench images pull --plain-http "$IMG" >/dev/null
    e=$(elapsed "$s" "$(now)")
    stop_containerd
    echo "$e"
}

run_tar_seq() {
    rm -rf "$T/tar"; mkdir -p "$T/tar"
    s=$(now)
    for b in $LAYER_BLOBS; do
        mkdir -p "$T/tar/$b"
        tar -xzf "$T/layout/blobs/sha256/$b" -C "$T/tar/$b"
    done
    elapsed "$s" "$(now)"
}

run_tar_par() {
    rm -rf "$T/tar"; mkdir -p "$T/tar"
    s=$(now)
    for b in $LAYER_BLOBS; do
        mkdir -p "$T/tar/$b"
        tar -xzf "$T/layout/blobs/sha256/$b" -C "$T/tar/$b" &
    done
    wait
    elapsed "$s" "$(now)"
}

run_berth_load() {
    rm -rf "$T/berth-load"
    s=$(now)
    "$BERTH" --root "$T/berth-load" load -q -i "$T/layout" >/dev/null
    elapsed "$s" "$(now)"
}

# (the tools' helper functions use other variable names: sh has no local variables)
measure() {
    run=0
    while [ $run -lt "$RUNS" ]; do "$1"; echo; run=$((run + 1)); done | grep . | median
}

echo "measuring ($RUNS runs each)..."
B=$(measure run_berth)
S=$(measure run_skopeo_umoci)
C=$(measure run_ctr)
TS=$(measure run_tar_seq)
TP=$(measure run_tar_par)
BL=$(measure run_berth_load)

mb() { echo "$1" | awk '{printf "%.1f", $1 / 1e6}'; }
rate() { echo "$UNCOMP $1" | awk '{printf "%.0f", $1 / 1e6 / $2}'; }
ratio() { echo "$1 $B" | awk '{printf "%.2fx", $1 / $2}'; }

echo
echo "image: $NLAYERS layers, $(mb $UNCOMP) MB uncompressed, $(mb $COMP) MB gzip; median of $RUNS runs"
printf '%-40s %10s %14s %12s\n' "pull + unpack from the local registry" "time (s)" "vs berth" "MB/s"
printf '%-40s %10s %14s %12s\n' "berth pull" "$B" "1.00x" "$(rate $B)"
printf '%-40s %10s %14s %12s\n' "skopeo copy + umoci unpack" "$S" "$(ratio $S)" "$(rate $S)"
printf '%-40s %10s %14s %12s\n' "ctr image pull (containerd)" "$C" "$(ratio $C)" "$(rate $C)"
printf '%-40s %10s %14s %12s\n' "unpack of the same layers (local)" "" "" ""
printf '%-40s %10s %14s %12s\n' "berth load (OCI dir: verify, store, unpack)" "$BL" "$(ratio $BL)" "$(rate $BL)"
printf '%-40s %10s %14s %12s\n' "tar -xzf, one layer after another" "$TS" "$(ratio $TS)" "$(rate $TS)"
printf '%-40s %10s %14s %12s\n' "tar -xzf, all layers in parallel" "$TP" "$(ratio $TP)" "$(rate $TP)"
