#!/bin/sh
# Builds the test guest for a real VM on a slot (see the workspace notes on the test guest):
#   <cache-dir>/vmlinuz            Debian's kernel, from linux-image-amd64's dependency
#   <cache-dir>/initramfs.cpio.gz  busybox-static + virtio-net modules + /init
# Usage: scripts/build-guest-image.sh [cache-dir]   (default <repo>/.cache/guest)
# Idempotent and cached: a finished build (stamp matching this script) is reused without
# touching apt. Tests append a small cpio with /check.sh to the initramfs per run.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
cache=${1:-$repo/.cache/guest}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

# Fixed guest addressing, mirrored from src/dataplane/topology.ts.
GUEST_IP=169.254.0.21
GATEWAY_IP=169.254.0.22
GUEST_MAC=02:00:a9:fe:00:15

# Module load order from each .ko's depends= field (test-guest.md).
MODULES="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net"

script_sum=$(sha256sum "$0" | cut -d' ' -f1)

# Two test processes may build at once: serialise on a lock in the cache.
exec 9>"$cache/.lock"
flock 9

if [ -f "$cache/stamp" ] && [ "$(cat "$cache/stamp")" = "$script_sum" ] &&
   [ -s "$cache/vmlinuz" ] && [ -s "$cache/initramfs.cpio.gz" ]; then
  exit 0
fi

for tool in apt-get apt-cache dpkg-deb cpio gzip; do
  command -v "$tool" >/dev/null || { echo "build-guest-image: $tool missing" >&2; exit 1; }
done
busybox=/bin/busybox
if ! file -L "$busybox" 2>/dev/null | grep -q 'statically linked'; then
  # busybox-static installs /bin/busybox; without `file`, trust the package.
  dpkg -s busybox-static >/dev/null 2>&1 || { echo "build-guest-image: install busybox-static" >&2; exit 1; }
fi

work=$(mktemp -d "$cache/build.XXXXXX")
chmod 755 "$work" # apt-get download hands the fetch to the _apt user
trap 'rm -rf "$work"' EXIT

# linux-image-amd64 is a metapackage; its dependency is the real, versioned kernel package.
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
  sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n1)
[ -n "$kpkg" ] || { echo "build-guest-image: cannot resolve linux-image-amd64 (apt-get update?)" >&2; exit 1; }
echo "build-guest-image: kernel package $kpkg" >&2
(cd "$work" && apt-get download "$kpkg" >&2)
dpkg-deb -x "$work"/"$kpkg"_*.deb "$work/kernel"

kver=$(ls "$work/kernel/lib/modules" | head -n1)
cp "$work/kernel/boot/vmlinuz-$kver" "$work/vmlinuz"

root=$work/root
mkdir -p "$root/bin" "$root/sbin" "$root/proc" "$root/sys" "$root/dev" "$root/tmp" \
  "$root/run" "$root/etc" "$root/lib/modules"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done

for mod in $MODULES; do
  ko=$(find "$work/kernel/lib/modules/$kver" -name "$mod.ko" -o -name "$mod.ko.xz" -o -name "$mod.ko.zst" | head -n1)
  [ -n "$ko" ] || { echo "build-guest-image: module $mod not in $kpkg" >&2; exit 1; }
  case "$ko" in
    *.xz) xz -dc "$ko" >"$root/lib/modules/$mod.ko" ;;
    *.zst) zstd -dc "$ko" >"$root/lib/modules/$mod.ko" ;;
    *) cp "$ko" "$root/lib/modules/$mod.ko" ;;
  esac
done

cat >"$root/init" <<EOF
#!/bin/sh
# Test guest: bring eth0 up as the slot's guest, run /check.sh (appended per test), power off.
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mac=$GUEST_MAC
mtu=
for arg in \$(cat /proc/cmdline); do
  case "\$arg" in
    netslot.mac=*) mac=\${arg#netslot.mac=} ;;
    netslot.mtu=*) mtu=\${arg#netslot.mtu=} ;;
  esac
done
for m in $MODULES; do insmod /lib/modules/\$m.ko || echo "init: insmod \$m failed"; done
i=0
while [ ! -e /sys/class/net/eth0 ] && [ \$i -lt 100 ]; do sleep 0.05; i=\$((i + 1)); done
ip link set lo up
ip link set eth0 address "\$mac"
[ -z "\$mtu" ] || ip link set eth0 mtu "\$mtu"
ip addr add $GUEST_IP/30 dev eth0
ip link set eth0 up
ip route add default via $GATEWAY_IP
echo "=== netslot-check begin ==="
if [ -f /check.sh ]; then
  sh /check.sh 2>&1
  echo "RESULT exit=\$?"
else
  echo "RESULT exit=no-check-script"
fi
echo "=== netslot-check end ==="
sync
poweroff -f
EOF
chmod 755 "$root/init"

(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -9n >"$work/initramfs.cpio.gz"

# Publish atomically: outputs first, stamp last.
mv "$work/vmlinuz" "$cache/vmlinuz"
mv "$work/initramfs.cpio.gz" "$cache/initramfs.cpio.gz"
echo "$kpkg" >"$cache/kernel-package"
echo "$script_sum" >"$cache/stamp"
echo "build-guest-image: $cache/vmlinuz $cache/initramfs.cpio.gz" >&2
