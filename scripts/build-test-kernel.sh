#!/usr/bin/env bash
# Build the small Linux kernel of boot tests 2 and 3 (tests/linux_devices.rs,
# tests/linux_firmware.rs) from Debian's linux-source-6.1: `make tinyconfig` +
# guests/linux/rvmm-test.config + the in-kernel device self test guests/linux/rvmm_selftest.c.
# See docs/LINUX-TEST-KERNEL.md.
# Usage: scripts/build-test-kernel.sh [CACHE_DIR]   (default: target/linux-test, or
# $RVMM_TEST_KERNEL_CACHE). Prints the path of the bzImage, cached as bzImage-<hash> where the
# hash covers the source tarball name, the config fragment, the self test and this script.
# Needs linux-source-6.1, gcc, make, flex, bison, bc, libelf-dev (scripts/test.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
cache="${1:-${RVMM_TEST_KERNEL_CACHE:-$repo/target/linux-test}}"
mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"

tarball="$(ls /usr/src/linux-source-6.1.tar.* 2>/dev/null | head -n1 || true)"
if [ -z "$tarball" ]; then
  echo "build-test-kernel.sh: no /usr/src/linux-source-6.1.tar.*; apt-get install linux-source-6.1" >&2
  exit 1
fi
hash="$( (basename "$tarball"; stat -c %s "$tarball"; cat guests/linux/rvmm-test.config \
  guests/linux/rvmm_selftest.c "$0") | sha256sum | cut -c1-16)"
out="$cache/bzImage-$hash"
if [ -s "$out" ]; then
  echo "$out"
  exit 0
fi

src="$cache/src/linux-source-6.1"
if [ ! -f "$src/Makefile" ]; then
  echo "build-test-kernel.sh: unpacking $tarball" >&2
  rm -rf "$cache/src"
  mkdir -p "$cache/src"
  tar -xf "$tarball" -C "$cache/src"
fi

# Hook the self test into drivers/misc (idempotent: the tree is reused between builds).
cp guests/linux/rvmm_selftest.c "$src/drivers/misc/rvmm_selftest.c"
if ! grep -q RVMM_SELFTEST "$src/drivers/misc/Kconfig"; then
  # Before the file's final "endmenu".
  sed -i '$ d' "$src/drivers/misc/Kconfig"
  cat >>"$src/drivers/misc/Kconfig" <<'KCONFIG'
config RVMM_SELFTEST
	bool "rvmm in-kernel virtio device self test"
	depends on BLOCK && NET && HW_RANDOM && !MODULES
	help
	  Boot test 2 of rvmm: tests virtio-blk, virtio-rng and virtio-net at late_initcall,
	  then restarts the machine. Only for test kernels.

endmenu
KCONFIG
  echo 'obj-$(CONFIG_RVMM_SELFTEST) += rvmm_selftest.o' >>"$src/drivers/misc/Makefile"
fi

jobs="${RVMM_KERNEL_JOBS:-$(nproc)}"
cd "$src"
make -s ARCH=x86_64 tinyconfig >&2
scripts/kconfig/merge_config.sh -m .config "$repo/guests/linux/rvmm-test.config" >&2
make -s ARCH=x86_64 olddefconfig >&2
# merge_config.sh warns but goes on when a symbol does not stick (set or unset): fail instead.
missing=0
while IFS= read -r line; do
  case "$line" in
  CONFIG_*=*)
    if ! grep -qx "$line" .config; then
      echo "build-test-kernel.sh: $line did not stick in .config" >&2
      missing=1
    fi
    ;;
  "# CONFIG_"*" is not set")
    sym="${line#\# }"
    sym="${sym%% *}"
    if grep -q "^$sym=" .config; then
      echo "build-test-kernel.sh: $sym is still set in .config" >&2
      missing=1
    fi
    ;;
  esac
done <"$repo/guests/linux/rvmm-test.config"
[ "$missing" -eq 0 ] || exit 1

echo "build-test-kernel.sh: make -j$jobs bzImage in $src" >&2
start=$(date +%s)
make -s ARCH=x86_64 -j"$jobs" bzImage >&2
echo "build-test-kernel.sh: built in $(($(date +%s) - start)) s" >&2
cp arch/x86/boot/bzImage "$out.tmp"
cp .config "$cache/config-$hash"
mv "$out.tmp" "$out"
echo "$out"
