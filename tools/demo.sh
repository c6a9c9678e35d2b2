#!/bin/sh
# make demo: what a developer types every day, with no internet: import the built-in busybox
# image (made from Debian's busybox-static), `berth run --rm` it (with proof of its
# isolation), then a detached web server with a published port, fetched on 127.0.0.1, its
# logs, exec, and clean-up. Everything lives in a temp store root with its own bridge and
# subnet, removed at the end.
set -eu
cd "$(dirname "$0")/.."
bin=$(pwd)/target/release
work=$(mktemp -d /tmp/berth-demo.XXXXXX)
tag=$$
bridge="bdemo$((tag % 100000))"
subnet=""
for i in $(seq 200 250); do
    if ! ip -4 route | grep -q "^10\.233\.$i\."; then subnet="10.233.$i.0/24"; break; fi
done
[ -n "$subnet" ] || { echo "demo: no free subnet in 10.233.0.0/16" >&2; exit 1; }
cat > "$work/berth.toml" <<EOF
[engine]
cgroup-parent = "/berth-demo-$tag"
[engine.network]
default-name = "demo"
default-bridge = "$bridge"
default-subnet = "$subnet"
EOF
berth() { echo "\$ berth $*" >&2; "$bin/berth" --root "$work/root" --config "$work/berth.toml" "$@"; }
cleanup() {
    set +e
    for id in $("$bin/berth" --root "$work/root" --config "$work/berth.toml" ps -aq 2>/dev/null); do
        "$bin/berth" --root "$work/root" --config "$work/berth.toml" rm -f "$id" >/dev/null 2>&1
    done
    "$bin/berth" --root "$work/root" --config "$work/berth.toml" network rm demo >/dev/null 2>&1
    for h in /sys/fs/cgroup/*; do rmdir "$h/berth-demo-$tag" 2>/dev/null; done
    rm -rf "$work"
    host_net_restore
}
. tools/host-net-state.sh
host_net_save
trap cleanup EXIT INT TERM

echo "== the built-in default image: Debian's busybox-static as a root filesystem, imported"
"$bin/berth-testkit" rootfs "$work/rootfs"
img=localhost/busybox
tar -C "$work/rootfs" -cf - . | berth import - $img
berth images

echo
echo "== a container in the foreground, removed when it exits (berth-oci, the default runtime)"
echo "   the host: hostname $(hostname), $(wc -l < /proc/self/mountinfo) mounts, $(ls -d /proc/[0-9]* | wc -l) processes"
berth run --rm --hostname berth-demo --memory 64m $img sh -c '
    echo "   hostname:        $(hostname)"
    echo "   my pid:          $$"
    if [ -f /sys/fs/cgroup/memory.max ]; then limit=$(cat /sys/fs/cgroup/memory.max)
    else limit=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes); fi
    echo "   memory limit:    $limit bytes (from my own cgroup)"
    echo "   mounts I see:    $(wc -l < /proc/self/mountinfo)"
    echo "   processes I see: $(ls -d /proc/[0-9]* | wc -l) (its own pid namespace)"
    echo "   my address:      $(ip -4 -o addr show eth0 | awk "{print \$4}")"
'

echo
echo "== a detached web server (busybox httpd) with a published port"
port=$("$bin/berth-testkit" free-port)
berth run -d --name web -p "$port:80" $img httpd -f -v -p 80 -h /var/www
berth ps
echo "\$ curl http://127.0.0.1:$port/" >&2
page=""
for _ in $(seq 1 50); do
    if page=$(curl -sf -m 2 "http://127.0.0.1:$port/" 2>/dev/null); then break; fi
    sleep 0.1
done
[ -n "$page" ] || { echo "demo: the page did not come" >&2; exit 1; }
echo "$page"
berth logs web
berth port web
echo
echo "== exec into the running server"
berth exec web sh -c 'echo "   hello from exec in $(hostname), as $(id -un), beside: $(pidof httpd)"'
echo
echo "== the same image under another runtime handler (runc from Debian)"
berth run -d --name web2 --runtime runc $img sleep 600
berth exec web2 sh -c 'echo "   hello from exec in $(hostname) under runc"'
echo
echo "== clean-up"
berth stop web web2
berth rm web web2
berth ps -a
