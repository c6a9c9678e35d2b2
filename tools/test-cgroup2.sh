#!/bin/sh
# The berth-oci integration suite, its callers suite (podman with conmon, containerd with its
# runc shim) and berthd's pods suite inside a pure cgroup v2 guest (this host is hybrid v1/v2):
# the v2 paths (unified resources, eBPF device filter, cgroup.freeze, cgroup2 mounts, pods'
# cgroups and stats) run for real, also as podman, containerd and a CRI client drive them.
# Boots one guest (tools/run-in-cgroup2-vm.sh, qemu TCG) for all three.
set -eu
cd "$(dirname "$0")/.."
repo=$(pwd)
cargo build --workspace --bins --quiet
make init >/dev/null
test_binary() {
    cargo test -p "$1" --test "$2" --no-run --message-format=json 2>/dev/null \
        | grep '"kind":\["test"\]' | grep "\"name\":\"$2\"" | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n1
}
oci=$(test_binary berth-oci oci)
callers=$(test_binary berth-oci callers)
pods=$(test_binary berth-cri pods)
for t in "$oci" "$callers" "$pods"; do
    [ -x "$t" ] || { echo "test-cgroup2: could not build the integration test binaries" >&2; exit 1; }
done
crictl=${CRICTL:-$repo/../shared/bin/crictl}
if [ ! -x "$crictl" ]; then
    if [ "${CI:-}" = true ]; then
        echo "test-cgroup2: FAILED: crictl ($crictl) is missing for the pods suite; set CRICTL" >&2
        exit 1
    fi
    echo "test-cgroup2: crictl ($crictl) is missing: the pods suite's crictl test will say it was SKIPPED" >&2
    crictl=
fi
# The guest has the host's binaries (and their libraries) at the same paths, and a tmpfs root
# otherwise: podman's signature policy and default configuration (seccomp profile) go in
# through the shared directory, /var/lib and /var/tmp are made.
files=$repo/target/cgroup2-guest-files
rm -rf "$files"
mkdir -p "$files/etc/containers" "$files/usr/share"
cp /etc/containers/policy.json "$files/etc/containers/"
cp -a /usr/share/containers "$files/usr/share/"
# The oci suite's static probe (probe.c): the guest has no C compiler, so it is built here.
mkdir -p "$files/usr/local/libexec"
cc -static -Os -o "$files/usr/local/libexec/berth-oci-test-probe" crates/berth-oci/tests/oci/probe.c
# berthd and its CLI run from the shared directory; listed for their libraries.
bins="$oci $callers $pods $repo/target/debug/berth-oci $repo/target/debug/berthd $repo/target/debug/berth $crictl"
for plugin in bridge host-local loopback portmap firewall; do
    bins="$bins /usr/lib/cni/$plugin"
done
for tool in podman conmon containerd ctr containerd-shim-runc-v2 runc crun xtables-nft-multi skopeo docker-registry htpasswd openssl; do
    path=$(command -v $tool) || { echo "test-cgroup2: $tool is not installed (make deps)" >&2; exit 1; }
    bins="$bins $path"
done
# openssl (the pods suite makes a certificate and talks TLS with it) reads its configuration.
mkdir -p "$files/etc/ssl" "$files/usr/lib/ssl"
cp "$(realpath -e /usr/lib/ssl/openssl.cnf)" "$files/etc/ssl/openssl.cnf"
ln -sf /etc/ssl/openssl.cnf "$files/usr/lib/ssl/openssl.cnf"
# The CNI plugins drive iptables (nftables underneath, as on the host): its names, its
# extensions (loaded at run time, so not among its libraries), and the netfilter modules the
# bridge, portmap and firewall plugins use.
for name in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
    mkdir -p "$files/usr/sbin"
    ln -sf "$(realpath -e "$(command -v xtables-nft-multi)")" "$files/usr/sbin/$name"
done
xtables=$(dirname "$(realpath -e "$(command -v xtables-nft-multi)")")/../lib/$(gcc -print-multiarch)/xtables
[ -d "$xtables" ] || xtables=/usr/lib/$(gcc -print-multiarch)/xtables
mkdir -p "$files$(dirname "$xtables")"
cp -a "$xtables" "$files$(dirname "$xtables")/"
modules="virtio_pci 9pnet_virtio 9p overlay veth bridge loop br_netfilter nf_tables nft_compat nft_chain_nat"
modules="$modules nft_nat nft_masq nft_ct xt_MASQUERADE xt_comment xt_conntrack xt_mark xt_multiport xt_addrtype"
modules="$modules xt_nat xt_tcpudp iptable_nat iptable_filter"
# In the guest, on one line (the command crosses to the guest shell-quoted): set up, then the
# suites whatever the earlier ones' results, with this script's arguments (test filters) for all.
guest='mkdir -p /var/lib /var/tmp /run && cp -a "$1/." / || exit 1; oci=$2; callers=$3; pods=$4;'
guest="$guest"' export CRICTL="$5" BERTH_TEST_INIT="$6"; suites=" $7 "; shift 7; rc=0;'
guest="$guest"' export TMPDIR=/tmp PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin;'
guest="$guest"' export BERTH_OCI_TEST_PROBE=/usr/local/libexec/berth-oci-test-probe;'
guest="$guest"' case $suites in *" oci "*) "$oci" --test-threads 2 --skip endurance:: "$@" || rc=1;; esac;'
guest="$guest"' case $suites in *" callers "*) echo "== callers (podman, containerd)";'
guest="$guest"' "$callers" --test-threads 2 "$@" || rc=1;; esac;'
guest="$guest"' case $suites in *" pods "*) echo "== pods (berthd)"; "$pods" --test-threads 2 "$@" || rc=1;; esac;'
guest="$guest"' exit $rc'
# V2_SUITES picks some of them (a developer's run; make test runs all three).
suites=${V2_SUITES:-oci callers pods}
echo "== berth-oci integration, callers and berthd pods suites in a pure cgroup v2 guest"
# The 1,000-cycle endurance test runs on the host's hybrid and pure v1 hierarchies only: under
# software emulation the guest is many times slower than the host. The three suites took 19 to
# 22 minutes in the guest on the 2-core VM; the timeout leaves room for a slower machine.
VM_BINS="$bins" VM_MODULES="$modules" VM_MEM=${VM_MEM:-1536} VM_TIMEOUT=${VM_TIMEOUT:-2400} \
    ./tools/run-in-cgroup2-vm.sh "$repo" sh -c "$guest" guest "$files" "$oci" "$callers" "$pods" \
    "${crictl:-/nonexistent/crictl}" "$repo/target/init/release/berth-init" "$suites" "$@"
