#!/usr/bin/env bash
# Fetch Debian's stock cloud kernel and build a tiny initrd for the Linux boot test.
# Usage: scripts/get-linux.sh [CACHE_DIR]   (default: target/linux, or $RVMM_LINUX_CACHE)
# Prints the cache directory. It then holds:
#   vmlinuz    the bzImage of linux-image-cloud-amd64's kernel package (its version in VERSION)
#   initrd.img a newc cpio: /init (a busybox shell script), /bin/busybox (static)
#   busybox    the same static busybox, for boot test 2's root file system (tests/linux_devices.rs)
# Needs apt-get (Debian's package registry); runs unprivileged when the files are cached.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${1:-${RVMM_LINUX_CACHE:-$PWD/target/linux}}"
mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"

if [ -s "$cache/vmlinuz" ] && [ -s "$cache/initrd.img" ] && [ -s "$cache/busybox" ]; then
  echo "$cache"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# apt's sandbox user must be able to write the download directory.
chmod 777 "$work"
cd "$work"

# The metapackage depends on exactly one versioned kernel package: fetch that one.
kernel_pkg() {
  apt-cache depends linux-image-cloud-amd64 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -n1
}
pkg="$(kernel_pkg)"
if [ -z "$pkg" ] && [ "$(id -u)" -eq 0 ]; then
  apt-get update -qq >&2
  pkg="$(kernel_pkg)"
fi
if [ -z "$pkg" ]; then
  echo "get-linux.sh: apt-cache knows no linux-image-cloud-amd64 (run apt-get update as root)" >&2
  exit 1
fi
apt-get download -q "$pkg" busybox-static >&2
dpkg-deb --fsys-tarfile "$pkg"_*.deb | tar -x --wildcards './boot/vmlinuz-*'
dpkg-deb -x busybox-static_*.deb bb

mkdir -p root/bin root/dev root/proc root/sys
cp bb/bin/busybox root/bin/busybox
# The user-space checks of the boot test; on a host where user space cannot make system calls
# (docs/EMULATED-KVM.md) this never runs, and the test says so.
cat >root/init <<'EOF'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
echo "rvmm-guest: user space up"
echo "rvmm-guest: cpus=$(/bin/busybox grep -c ^processor /proc/cpuinfo)"
/bin/busybox reboot -f
EOF
chmod 755 root/init root/bin/busybox
# Uncompressed: inflating it is guest kernel work, slow where CPL0 is emulated (48 s measured).
(cd root && find . | ../bb/bin/busybox cpio -o -H newc -R 0:0 2>/dev/null) >initrd.img

cp boot/vmlinuz-* "$cache/vmlinuz.tmp"
mv "$cache/vmlinuz.tmp" "$cache/vmlinuz"
mv initrd.img "$cache/initrd.img"
cp bb/bin/busybox "$cache/busybox.tmp"
mv "$cache/busybox.tmp" "$cache/busybox"
echo "${pkg#linux-image-}" >"$cache/VERSION"
echo "$cache"
