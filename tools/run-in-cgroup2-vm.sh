#!/bin/bash
# (The team's shared tool from ../shared/tools, kept in the repo so CI has it.)
# run-in-cgroup2-vm.sh SHARE_DIR COMMAND...
#
# For testing the cgroup v2 path on hosts whose cgroups are v1 or hybrid.
# Needs Debian's qemu-system-x86, linux-image-amd64 and busybox-static (install them from the
# project's own dependency script). About 4-8 s per boot under TCG on 2 cores: run many tests in
# one boot rather than one boot per test.
#
# Boots a throw-away qemu guest (TCG by default, VM_ACCEL=kvm where KVM is real
# hardware virt; Debian distro kernel + busybox initramfs) with a
# pure cgroup v2 hierarchy (cgroup_no_v1=all, cgroup2 on /sys/fs/cgroup),
# shares SHARE_DIR read-write over virtio-9p at the SAME absolute path inside
# the guest, runs COMMAND there (cwd = SHARE_DIR, as root, via /bin/sh), and
# exits with COMMAND's exit status.  COMMAND's stdout/stderr are streamed to
# this script's stdout/stderr (via two extra serial ports), the kernel console
# goes to a log file that is printed only on failure.
#
# Exit status: COMMAND's status; 125 = guest never reported a status
# (boot failure, panic, timeout) -> console log is dumped to stderr.
#
# Environment knobs:
#   VM_KERNEL   kernel image          (default: newest /boot/vmlinuz-*)
#   VM_KVER     its module version    (default: derived from VM_KERNEL name)
#   VM_MEM      guest RAM in MiB      (default 1024)
#   VM_CPUS     vCPUs                 (default 2)
#   VM_TIMEOUT  seconds before the guest is killed (default 300)
#   VM_BINS     host binaries copied (with their ldd libraries) into the
#               initramfs at the same path (default: runc if installed)
#   VM_MODULES  kernel modules loaded at boot (deps resolved with modprobe -S)
#   VM_APPEND   extra kernel command line
#   VM_CACHE    initramfs cache dir   (default ~/.cache/cgroup2-vm)
#   VM_KEEP_LOG=1  always print the guest console log to stderr
#   VM_ACCEL    tcg (default) | kvm;  VM_CPU overrides -cpu;  VM_PVH=0 boots the bzImage
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 SHARE_DIR COMMAND..." >&2
    exit 2
fi
SHARE=$(realpath -e "$1"); shift

KERNEL=${VM_KERNEL:-$(ls -1 /boot/vmlinuz-* | sort -V | tail -n1)}
KVER=${VM_KVER:-${KERNEL##*/vmlinuz-}}
MEM=${VM_MEM:-1024}
CPUS=${VM_CPUS:-2}
TIMEOUT=${VM_TIMEOUT:-300}
CACHE=${VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cgroup2-vm}
MODULES=${VM_MODULES:-virtio_pci 9pnet_virtio 9p overlay veth bridge loop}
if [ -z "${VM_BINS+x}" ]; then VM_BINS=$(command -v runc || true); fi
BUSYBOX=${VM_BUSYBOX:-/bin/busybox}   # must be static (busybox-static)
ACCEL=${VM_ACCEL:-tcg}                # kvm | tcg (this VM kind's /dev/kvm is a software
                                      # hypervisor that cannot boot a stock kernel: use tcg)
case $ACCEL in
  kvm) ACCEL_ARGS=(-machine q35 -accel kvm -cpu "${VM_CPU:-host}") ;;
  tcg) ACCEL_ARGS=(-machine q35 -accel tcg,thread=multi -cpu "${VM_CPU:-max}") ;;
  *) echo "VM_ACCEL must be kvm or tcg" >&2; exit 2 ;;
esac

# ---------------------------------------------------------------- initramfs
build_initramfs() {
    local out=$1 root
    root=$(mktemp -d)
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,run,tmp,mnt,etc,lib/modules}
    cp "$BUSYBOX" "$root/bin/busybox"
    for app in $("$BUSYBOX" --list); do
        [ "$app" = busybox ] || ln -sf busybox "$root/bin/$app"
    done
    # kernel modules, flattened, plus a load-order list
    : > "$root/lib/modules/order"
    local m f
    for m in $MODULES; do
        modprobe -S "$KVER" --show-depends "$m" | while read -r cmd f _; do
            [ "$cmd" = insmod ] || continue
            if ! grep -qx "${f##*/}" "$root/lib/modules/order"; then
                cp "$f" "$root/lib/modules/"
                echo "${f##*/}" >> "$root/lib/modules/order"
            fi
        done
    done
    # extra host binaries + their shared libraries at identical paths
    local b lib
    for b in $VM_BINS; do
        b=$(realpath -e "$b")
        mkdir -p "$root$(dirname "$b")"; cp "$b" "$root$b"
        for lib in $(ldd "$b" 2>/dev/null | grep -o '/[^ ]*' || true); do
            mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"
        done
    done
    cat > "$root/init" <<'EOF'
#!/bin/sh
# stage 1: runs on the initramfs rootfs, which cannot be pivot_root'ed
# (runc needs pivot_root), so copy everything into a tmpfs and switch_root.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t devtmpfs dev /dev
mkdir /newroot
mount -t tmpfs -o mode=0755 root /newroot
for e in /*; do
  case $e in /proc|/dev|/sys|/newroot) mkdir -p /newroot$e;; *) cp -a $e /newroot/;; esac
done
umount /proc; umount /dev
exec switch_root /newroot /init2
EOF
    cat > "$root/init2" <<'EOF'
#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm /root
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o mode=1777 shm /dev/shm
mount -t tmpfs -o mode=0755 run /run
mount -t tmpfs -o mode=1777 tmp /tmp
mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 /sys/fs/cgroup
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin; ln -sf /proc/self/fd/1 /dev/stdout; ln -sf /proc/self/fd/2 /dev/stderr
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m || echo "vmtest: insmod $m failed"; done
ip link set lo up 2>/dev/null
hostname vmtest
# ttyS1 = command stdout, ttyS2 = command stderr: raw, no \n -> \r\n
stty -F /dev/ttyS1 raw -echo; stty -F /dev/ttyS2 raw -echo
mkdir -p /vmtest-ctl
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 ctl /vmtest-ctl
SHARE=$(cat /vmtest-ctl/share)
mkdir -p "$SHARE"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose share "$SHARE"
echo "vmtest: booted in $(cut -d' ' -f1 /proc/uptime)s, running command"
cd "$SHARE"
sh /vmtest-ctl/cmd.sh </dev/null >/dev/ttyS1 2>/dev/ttyS2
rc=$?
echo $rc > /vmtest-ctl/rc
echo "vmtest: command exited rc=$rc at $(cut -d' ' -f1 /proc/uptime)s"
sync
umount "$SHARE" /vmtest-ctl 2>/dev/null
poweroff -f
EOF
    chmod +x "$root/init" "$root/init2"
    (cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$out.tmp"
    mv "$out.tmp" "$out"
    rm -rf "$root"
}

mkdir -p "$CACHE"
# Boot the uncompressed ELF vmlinux via its PVH entry point: skips the bzImage
# xz decompressor (~3 s under TCG; it also hung under this host's kvm_pvm).
if [ "${VM_PVH:-1}" = 1 ] && [ "$(head -c4 "$KERNEL" | od -An -tx1 | tr -d ' ')" != 7f454c46 ]; then
    VMLINUX="$CACHE/vmlinux-$KVER"
    if [ ! -s "$VMLINUX" ]; then
        python3 - "$KERNEL" "$VMLINUX.tmp" <<'PY'
import lzma, sys
d = open(sys.argv[1], 'rb').read()
off = d.find(b'\xfd7zXZ\x00')          # Debian kernels are CONFIG_KERNEL_XZ
if off < 0: sys.exit("no xz payload in " + sys.argv[1])
open(sys.argv[2], 'wb').write(lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(d[off:]))
PY
        mv "$VMLINUX.tmp" "$VMLINUX"
    fi
    KERNEL=$VMLINUX
fi
key=$( { echo "$KVER $MODULES"; sha256sum "$0" "$BUSYBOX" $VM_BINS; } | sha256sum | cut -c1-16)
INITRD="$CACHE/initramfs-$KVER-$key.cpio.gz"
[ -s "$INITRD" ] || build_initramfs "$INITRD"

# ---------------------------------------------------------------- run
CTL=$(mktemp -d /tmp/vmtest.XXXXXX)
trap 'rm -rf "$CTL"' EXIT
echo "$SHARE" > "$CTL/share"
{ printf 'exec'; printf ' %q' "$@"; printf '\n'; } > "$CTL/cmd.sh"

# Guest stdout/stderr come back through FIFOs drained by cat, so writes go
# through this script's own fds (no reopen of /dev/stdout => no offset clash).
mkfifo "$CTL/out.fifo" "$CTL/err.fifo"
cat "$CTL/out.fifo" & cat_out=$!
cat "$CTL/err.fifo" >&2 & cat_err=$!
set +e
timeout --foreground -k 5 "$TIMEOUT" \
qemu-system-x86_64 \
    -nodefaults -no-user-config "${ACCEL_ARGS[@]}" \
    -m "$MEM" -smp "$CPUS" -display none -monitor none -no-reboot \
    -kernel "$KERNEL" -initrd "$INITRD" \
    -append "console=ttyS0 cgroup_no_v1=all quiet loglevel=4 panic=-1 rdinit=/init ${VM_APPEND:-}" \
    -chardev file,id=con,path="$CTL/console.log" -serial chardev:con \
    -chardev file,id=out,path="$CTL/out.fifo",append=on -serial chardev:out \
    -chardev file,id=err,path="$CTL/err.fifo",append=on -serial chardev:err \
    -fsdev local,id=ctl,path="$CTL",security_model=none \
    -device virtio-9p-pci,fsdev=ctl,mount_tag=ctl \
    -fsdev local,id=share,path="$SHARE",security_model=passthrough \
    -device virtio-9p-pci,fsdev=share,mount_tag=share \
    </dev/null
qrc=$?
wait $cat_out $cat_err
set -e

if [ -s "$CTL/rc" ]; then
    rc=$(cat "$CTL/rc")
    [ "${VM_KEEP_LOG:-0}" = 1 ] && cat "$CTL/console.log" >&2
    exit "$rc"
fi
echo "vmtest: guest did not report an exit status (qemu rc=$qrc); console log:" >&2
cat "$CTL/console.log" >&2 || true
exit 125
